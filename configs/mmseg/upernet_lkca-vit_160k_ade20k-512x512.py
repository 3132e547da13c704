# UperNet 160k on ADE20K (512x512) with zoo_lkca_vit, isotropic (patch 4, 10 blocks): the last block of each
# quarter of the depth, made a pyramid by the backbone, as mmseg's ViT UperNet configs take a ViT's blocks. LKCA is
# a small-data model (32x32 images) with no segmentation code and no weights: Swin-T's official AdamW settings
# (lr 6e-5, weight decay 0.01), LKCA's training drop path (0.1, every block). Set init_cfg to a checkpoint of your
# own.
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_lkca_vit", out_indices=(2, 4, 7, 9), drop_path_rate=0.1, init_cfg=None),
    decode_head=dict(in_channels=[210] * 4),
    auxiliary_head=dict(in_channels=210),
)
