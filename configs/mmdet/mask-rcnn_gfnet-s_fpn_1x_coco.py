# Mask R-CNN 1x on COCO with zoo_gfnet_s, isotropic (patch 16, 19 blocks): the last block of each quarter of the
# depth, made a stride 4-32 pyramid by the backbone, as mmseg's ViT UperNet configs take a ViT's blocks. The
# global filters, learned for 14x14 maps, are resized bilinearly to each map, as the authors' segmentation code
# does. GFNet releases no detection code: Swin-T's official AdamW settings (lr 1e-4, weight decay 0.05),
# GFNet-S's ImageNet drop path (0.15).
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_gfnet_s", out_indices=(4, 9, 14, 18), drop_path_rate=0.15),
    neck=dict(in_channels=[384] * 4),
)
