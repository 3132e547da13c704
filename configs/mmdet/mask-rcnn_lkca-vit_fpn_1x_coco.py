# Mask R-CNN 1x on COCO with zoo_lkca_vit, isotropic (patch 4, 10 blocks): the last block of each quarter of the
# depth, made a pyramid by the backbone, as mmseg's ViT UperNet configs take a ViT's blocks. LKCA is a small-data
# model (32x32 images) with no detection code and no weights: Swin-T's official AdamW settings (lr 1e-4, weight
# decay 0.05), LKCA's training drop path (0.1, every block). Set init_cfg to a checkpoint of your own.
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_lkca_vit", out_indices=(2, 4, 7, 9), drop_path_rate=0.1, init_cfg=None),
    neck=dict(in_channels=[210] * 4),
)
