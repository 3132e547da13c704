# Mask R-CNN 1x on COCO with zoo_swin_tiny.
# Official: Swin-Transformer-Object-Detection / mmdet `swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py`
# (AdamW lr 1e-4, weight decay 0.05, drop path 0.2): 43.7 box AP / 39.8 mask AP.
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_swin_tiny", drop_path_rate=0.2, init_cfg=dict(checkpoint=".ms_in1k")),
    neck=dict(in_channels=[96, 192, 384, 768]),
)
