# UperNet 160k on ADE20K (512x512) with zoo_gfnet_s, isotropic (patch 16, 19 blocks): the last block of each
# quarter of the depth, made a stride 4-32 pyramid by the backbone, as mmseg's ViT UperNet configs take a ViT's
# blocks. The global filters, learned for 14x14 maps, are resized bilinearly to each map, as the authors'
# segmentation code does. GFNet releases no segmentation code: Swin-T's official AdamW settings (lr 6e-5, weight
# decay 0.01), GFNet-S's ImageNet drop path (0.15).
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_gfnet_s", out_indices=(4, 9, 14, 18), drop_path_rate=0.15),
    decode_head=dict(in_channels=[384] * 4),
    auxiliary_head=dict(in_channels=384),
)
