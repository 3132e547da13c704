# Mask R-CNN 1x on COCO with zoo_parcnet_s.
# ParC-Net releases no mmdet code (its detector is SSDLite): Swin-T's AdamW settings, on the
# stride-4 to stride-32 stages.
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_parcnet_s", out_indices=(1, 2, 3, 4)),
    neck=dict(in_channels=[64, 96, 128, 160]),
)
