# Mask R-CNN 1x on COCO with zoo_flatten_cswin_tiny.
# FLatten Transformer releases no detection code, and CSWin none: Swin-T's official Mask R-CNN 1x settings
# (AdamW lr 1e-4, weight decay 0.05, drop path 0.2).
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_flatten_cswin_tiny", drop_path_rate=0.2),
    neck=dict(in_channels=[64, 128, 256, 512]),
)
