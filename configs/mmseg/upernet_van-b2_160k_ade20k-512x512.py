# UperNet 160k on ADE20K (512x512) with zoo_van_b2.
# Official: Visual-Attention-Network/VAN-Segmentation
# `configs/upernet/1k_pretrained/upernet_van_b2_512x512_160k_ade20k.py`
# (AdamW lr 6e-5, weight decay 0.01, drop path 0.1): 50.1 mIoU (multi-scale).
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_van_b2", drop_path_rate=0.1),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320),
)
