# Mask R-CNN 1x on COCO with zoo_svt_h_s.
# SVT releases no detection code and no weights: Swin-T's official AdamW settings (lr 1e-4, weight decay 0.05),
# SVT-H-S's ImageNet drop path (0.1). Set init_cfg to a checkpoint of your own.
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_svt_h_s", drop_path_rate=0.1, init_cfg=None),
    neck=dict(in_channels=[64, 128, 320, 448]),
)
