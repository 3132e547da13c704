# Mask R-CNN 1x on COCO with zoo_flatten_swin_tiny.
# FLatten Transformer releases no detection code: Swin-T's official settings (drop path 0.2).
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_flatten_swin_tiny", drop_path_rate=0.2),
    neck=dict(in_channels=[96, 192, 384, 768]),
)
