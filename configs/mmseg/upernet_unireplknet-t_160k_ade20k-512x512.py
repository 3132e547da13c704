# UperNet 160k on ADE20K (512x512) with zoo_unireplknet_t.
# No weight decay on 1-D parameters (biases, norms, layer scales), as the official constructor does; GRN's
# gamma and beta, 4-D there, are decayed.
# Official: AILab-CVC/UniRepLKNet `segmentation/configs/ade20k/upernet_unireplknet_t_512_160k_ade20k.py`
# (AdamW lr 1e-4, weight decay 0.05, layer decay 1.0, i.e. none, drop path 0.2, SyncBN): 48.6 mIoU single-scale.
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_unireplknet_t", drop_path_rate=0.2, norm_cfg=dict(type="SyncBN")),
    decode_head=dict(in_channels=[80, 160, 320, 640]),
    auxiliary_head=dict(in_channels=320),
)
optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.05),
    paramwise_cfg=dict(flat_decay_mult=0.0, custom_keys={".grn.": dict(decay_mult=1.0)}),
)
