# Mask R-CNN 1x on COCO with zoo_cswin_tiny.
# microsoft/CSWin-Transformer releases segmentation code only; its README reports CSWin-T with Mask R-CNN 3x
# (49.0 box AP / 43.6 mask AP), trained on Swin's detection code. Swin-T's official Mask R-CNN 1x settings:
# AdamW lr 1e-4, weight decay 0.05 (none on norms and position biases), drop path 0.2.
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_cswin_tiny", drop_path_rate=0.2),
    neck=dict(in_channels=[64, 128, 256, 512]),
)
