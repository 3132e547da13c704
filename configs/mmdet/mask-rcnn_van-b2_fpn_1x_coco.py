# Mask R-CNN 1x on COCO with zoo_van_b2.
# VAN releases no detection code: Swin-T's official AdamW settings, VAN's segmentation drop path (0.1).
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_van_b2", drop_path_rate=0.1),
    neck=dict(in_channels=[64, 128, 320, 512]),
)
