# UperNet 160k on ADE20K (512x512) with zoo_shvit_s4.
# SHViT releases no segmentation code: Swin-T's official AdamW settings, UperNet on strides 16-64.
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_shvit_s4", out_indices=(0, 1, 2)),
    decode_head=dict(in_channels=[224, 336, 448], in_index=[0, 1, 2]),
    auxiliary_head=dict(in_channels=336, in_index=1),
)
