# UperNet 160k on ADE20K (512x512) with zoo_flatten_cswin_tiny.
# FLatten Transformer releases no segmentation code: the CSWin trunk's official settings
# (microsoft/CSWin-Transformer `segmentation/configs/cswin/upernet_cswin_tiny.py`: AdamW lr 6e-5, weight decay
# 0.01, drop path 0.3).
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_flatten_cswin_tiny", drop_path_rate=0.3),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256),
)
