# UperNet 160k on ADE20K (512x512) with zoo_svt_h_s.
# SVT releases no segmentation code and no weights: Swin-T's official AdamW settings (lr 6e-5, weight decay 0.01),
# SVT-H-S's ImageNet drop path (0.1). Set init_cfg to a checkpoint of your own.
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_svt_h_s", drop_path_rate=0.1, init_cfg=None),
    decode_head=dict(in_channels=[64, 128, 320, 448]),
    auxiliary_head=dict(in_channels=320),
)
