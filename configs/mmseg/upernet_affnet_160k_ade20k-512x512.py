# UperNet 160k on ADE20K (512x512) with zoo_affnet (AFFNet, the official mode "small"), on its stride 4-32 stages.
# AFFNet reports ADE20K with cvnets' DeepLabv3 (38.4 mIoU), whose configuration files are not in git, and releases
# no mmseg code: Swin-T's official AdamW settings (lr 6e-5, weight decay 0.01), no drop path (the AFFNet
# classification default).
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_affnet", out_indices=(1, 2, 3, 4), drop_path_rate=0.0),
    decode_head=dict(in_channels=[64, 128, 256, 320]),
    auxiliary_head=dict(in_channels=256),
)
