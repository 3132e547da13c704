# UperNet 160k on ADE20K (512x512) with zoo_parcnetv2_t.
# No weight decay on 1-D parameters (biases, norms, layer scales), as the official constructor does.
# Official: XuRuihan/ParCNetV2 `semantic_segmentation/configs/upernet/upernet_parcnetv2_tiny_512_160k_ss.py`
# (AdamW lr 1e-4, weight decay 0.05, stage-wise lr decay 0.9, drop path 0.3).
# No ParCNetV2 weights are released: set init_cfg to a checkpoint of your own.
_base_ = "./_base_/upernet_zoo-convnext_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_parcnetv2_t", drop_path_rate=0.3, init_cfg=None),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320),
)
