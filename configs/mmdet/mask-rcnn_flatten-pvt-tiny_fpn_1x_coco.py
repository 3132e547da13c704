# Mask R-CNN 1x on COCO with zoo_flatten_pvt_tiny.
# FLatten Transformer releases no detection code: the official Mask R-CNN 1x settings of the PVT trunk, as
# Agent Attention uses them for Agent-PVT-T (`agent_pvt_t_mrcnn_1x_12-16-28-28.py`: AdamW lr 2e-4, weight decay
# 1e-4 on every parameter, 500-iteration warm-up, drop path 0.1).
_base_ = "./_base_/mask-rcnn_zoo-pvt_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_flatten_pvt_tiny", drop_path_rate=0.1),
    neck=dict(in_channels=[64, 128, 320, 512]),
)
