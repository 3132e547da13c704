# Cascade Mask R-CNN (4conv1fc GIoU heads) 3x on COCO, multi-scale training, with zoo_cswin_tiny.
# microsoft/CSWin-Transformer reports CSWin-T with Cascade Mask R-CNN 3x (52.5 box AP / 45.3 mask AP), trained
# on Swin's detection code; it releases no detection config. Swin-T's official Cascade Mask R-CNN 3x settings
# (`cascade_mask_rcnn_swin_tiny_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco.py`): AdamW lr 1e-4,
# weight decay 0.05, no layer decay, drop path 0.2.
_base_ = "./_base_/cascade-mask-rcnn_zoo_fpn_giou_3x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_cswin_tiny", drop_path_rate=0.2),
    neck=dict(in_channels=[64, 128, 256, 512]),
)
optim_wrapper = dict(optimizer=dict(lr=1e-4))
