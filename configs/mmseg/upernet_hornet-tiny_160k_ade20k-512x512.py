# UperNet 160k on ADE20K (512x512) with zoo_hornet_tiny.
# No weight decay on 1-D parameters (biases, norms, layer scales), as the official constructor does.
# Official: raoyongming/HorNet `semantic_segmentation/configs/hornet/upernet_hornet_tiny_7x7_512_160k_ade20k.py`
# (AdamW lr 1e-4, weight decay 0.05, stage-wise lr decay 0.9, drop path 0.4): 48.1 mIoU.
_base_ = "./_base_/upernet_zoo-convnext_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_hornet_tiny", drop_path_rate=0.4),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256),
)
