# UperNet 160k on ADE20K (512x512) with zoo_cswin_tiny.
# Official: microsoft/CSWin-Transformer `segmentation/configs/cswin/upernet_cswin_tiny.py` (AdamW lr 6e-5, weight
# decay 0.01, none on norms and position biases, drop path 0.3): 49.3 mIoU single-scale, 50.7 multi-scale.
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_cswin_tiny", drop_path_rate=0.3),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256),
)
