# Mask R-CNN 1x on COCO with zoo_agent_swin_tiny.
# Official: LeapLabTHU/Agent-Attention `downstream/detection/configs/agent_swin/agent_swin_t_mrcnn_1x_9-12-14-7.py`
# (AdamW lr 1e-4, weight decay 0.05, none on the agent biases, drop path 0.1): 44.6 box AP / 40.7 mask AP.
# The backbone pools its agents to the official 9x9, 12x12, 14x14, 7x7 grids (`downstream_cfg` of zoo_agent_swin).
_base_ = "./_base_/mask-rcnn_zoo-agent_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_agent_swin_tiny", drop_path_rate=0.1),
    neck=dict(in_channels=[96, 192, 384, 768]),
)
