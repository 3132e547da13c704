# UperNet 160k on ADE20K (512x512) with zoo_biformer_small.
# Official: rayleizhu/BiFormer `semantic_segmentation/configs/ade20k/upernet.biformer_small.py`
# (AdamW lr 6e-5, weight decay 0.01, drop path 0.3, 8x8 routing regions, SyncBN in the stem): 49.8 mIoU.
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_biformer_small", drop_path_rate=0.3, n_win=8, norm_cfg=dict(type="SyncBN")),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256),
)
