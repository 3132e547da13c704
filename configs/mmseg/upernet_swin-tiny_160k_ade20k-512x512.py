# UperNet 160k on ADE20K (512x512) with zoo_swin_tiny.
# Official: Swin-Transformer-Semantic-Segmentation / mmseg `swin/swin-tiny-...upernet...160k_ade20k-512x512.py`
# (AdamW lr 6e-5, weight decay 0.01, drop path 0.3): 44.51 mIoU single-scale.
_base_ = "./_base_/upernet_zoo_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_swin_tiny", drop_path_rate=0.3, init_cfg=dict(checkpoint=".ms_in1k")),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384),
)
