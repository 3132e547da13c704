# UperNet 160k on ADE20K (512x512) with zoo_flatten_pvt_tiny.
# FLatten Transformer releases no segmentation code: mmseg's Swin UperNet 160k settings (AdamW lr 6e-5, weight
# decay 0.01, none on norms and position biases), with the PVT-T trunk's downstream drop path 0.1 (Agent-PVT-T's
# official Semantic FPN config).
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_flatten_pvt_tiny", drop_path_rate=0.1),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320),
)
