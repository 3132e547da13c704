# UperNet 160k on ADE20K (512x512) with zoo_ffnet_2.
# No weight decay on 1-D parameters (biases, norms, layer scales), as the official constructor does.
# Official: ysj9909/FFNet `segmentation/configs/ade20k/upernet_ffnet_2_512_160k_ade20k.py` (distilled ImageNet
# model; AdamW lr 1e-4, weight decay 0.05, layer decay 1.0, i.e. none, drop path 0.2, SyncBN): 47.1 mIoU
# single-scale.
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_ffnet_2", drop_path_rate=0.2, norm_cfg=dict(type="SyncBN"),
                  init_cfg=dict(checkpoint=".dist_in1k")),
    decode_head=dict(in_channels=[88, 176, 352, 704]),
    auxiliary_head=dict(in_channels=352),
)
optim_wrapper = dict(optimizer=dict(lr=1e-4, weight_decay=0.05), paramwise_cfg=dict(flat_decay_mult=0.0))
