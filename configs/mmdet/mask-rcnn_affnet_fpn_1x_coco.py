# Mask R-CNN 1x on COCO with zoo_affnet (AFFNet, the official mode "small"), on its stride 4-32 stages.
# AFFNet's dense-prediction results come from cvnets (SSD / DeepLabv3) whose configuration files are not in git,
# and it releases no mmdet code: Swin-T's official AdamW settings (lr 1e-4, weight decay 0.05), no drop path (the
# AFFNet classification default).
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_affnet", out_indices=(1, 2, 3, 4), drop_path_rate=0.0),
    neck=dict(in_channels=[64, 128, 256, 320]),
)
