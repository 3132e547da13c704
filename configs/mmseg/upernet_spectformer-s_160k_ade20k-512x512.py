# UperNet 160k on ADE20K (512x512) with zoo_spectformer_s, isotropic (patch 16, 19 blocks): the last block of each
# quarter of the depth, made a stride 4-32 pyramid by the backbone, as mmseg's ViT UperNet configs take a ViT's
# blocks. SpectFormer releases no segmentation code and no weights: Swin-T's official AdamW settings (lr 6e-5,
# weight decay 0.01), SpectFormer-S's ImageNet drop path (0.15). Set init_cfg to a checkpoint of your own.
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_spectformer_s", out_indices=(4, 9, 14, 18), drop_path_rate=0.15, init_cfg=None),
    decode_head=dict(in_channels=[384] * 4),
    auxiliary_head=dict(in_channels=384),
)
