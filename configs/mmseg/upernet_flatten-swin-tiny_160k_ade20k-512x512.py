# UperNet 160k on ADE20K (512x512) with zoo_flatten_swin_tiny.
# FLatten Transformer releases no segmentation code: Swin-T's official settings (drop path 0.3).
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_flatten_swin_tiny", drop_path_rate=0.3),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384),
)
