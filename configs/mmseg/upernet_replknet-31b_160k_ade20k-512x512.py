# UperNet 160k on ADE20K (512x512) with zoo_replknet_31b.
# Official: DingXiaoH/RepLKNet-pytorch `segmentation/configs/RepLKNet-31B_1Kpretrain_upernet_160k_ade20k_512.py`
# (AdamW lr 2e-4, weight decay 0.05, none on norms, no layer decay, drop path 0.5, SyncBN): 49.9 mIoU single-scale.
# The official run took 40k iterations of 128 images (8 nodes x 8 GPUs x 2) with a 400-iteration warm-up, as many
# images as 160k iterations of 32; this config keeps the base's 160k iterations of 16 images.
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_replknet_31b", drop_path_rate=0.5, norm_cfg=dict(type="SyncBN")),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512),
)
optim_wrapper = dict(optimizer=dict(lr=2e-4, weight_decay=0.05), paramwise_cfg=dict(norm_decay_mult=0.0))
