# UperNet 160k on ADE20K (512x512) with zoo_parcnet_s.
# ParC-Net releases no mmseg code (its segmenter is DeepLabv3): Swin-T's AdamW settings, on the
# stride-4 to stride-32 stages.
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_parcnet_s", out_indices=(1, 2, 3, 4)),
    decode_head=dict(in_channels=[64, 96, 128, 160]),
    auxiliary_head=dict(in_channels=128),
)
