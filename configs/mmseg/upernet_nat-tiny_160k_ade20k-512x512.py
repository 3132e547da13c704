# UperNet 160k on ADE20K (512x512) with zoo_nat_tiny.
# Official: SHI-Labs/Neighborhood-Attention-Transformer
# `segmentation/configs/nat/upernet_nat_tiny_512x512_160k_ade20k.py`
# (AdamW lr 6e-5, weight decay 0.01, none on `rpb`, drop path 0.3).
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_nat_tiny", drop_path_rate=0.3),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={"rpb": dict(decay_mult=0.0)}))
