# UperNet 160k on ADE20K (512x512) with zoo_dinat_tiny.
# Official: SHI-Labs/Neighborhood-Attention-Transformer
# `segmentation/configs/dinat/upernet_dinat_tiny_512x512_160k_ade20k.py`
# (AdamW lr 6e-5, weight decay 0.01, none on `rpb`, drop path 0.3, dilations for 512-pixel inputs).
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_dinat_tiny", drop_path_rate=0.3,
                  dilations=((1, 16, 1), (1, 4, 1, 8), (1, 2, 1, 3, 1, 4) * 3, (1, 2, 1, 2, 1))),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={"rpb": dict(decay_mult=0.0)}))
