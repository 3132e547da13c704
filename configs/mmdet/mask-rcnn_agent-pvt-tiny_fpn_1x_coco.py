# Mask R-CNN 1x on COCO with zoo_agent_pvt_tiny.
# Official: LeapLabTHU/Agent-Attention `downstream/detection/configs/agent_pvt/agent_pvt_t_mrcnn_1x_12-16-28-28.py`
# (AdamW lr 2e-4, weight decay 1e-4 on every parameter, 500-iteration warm-up, drop path 0.1): 41.4 box AP.
# The backbone pools its agents to the official 12x12, 16x16, 28x28, 28x28 grids (`downstream_cfg` of zoo_agent_pvt).
_base_ = "./_base_/mask-rcnn_zoo-pvt_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_agent_pvt_tiny", drop_path_rate=0.1),
    neck=dict(in_channels=[64, 128, 320, 512]),
)
