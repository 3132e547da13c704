# Mask R-CNN 1x on COCO with zoo_agent_cswin_tiny.
# Agent Attention releases detection code for Agent-Swin and Agent-PVT only, and CSWin none: Swin-T's official
# Mask R-CNN 1x settings (AdamW lr 1e-4, weight decay 0.05, drop path 0.2), with no weight decay on the agent
# biases as in the official Agent-Swin configs.
_base_ = "./_base_/mask-rcnn_zoo-agent_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_agent_cswin_tiny", drop_path_rate=0.2),
    neck=dict(in_channels=[64, 128, 256, 512]),
)
