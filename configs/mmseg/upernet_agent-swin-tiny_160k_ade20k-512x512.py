# UperNet 160k on ADE20K (512x512) with zoo_agent_swin_tiny.
# Official: LeapLabTHU/Agent-Attention `downstream/segmentation/configs/agent_swin/upernet_agent_swin_t_9-12-14-7.py`
# (AdamW lr 6e-5, weight decay 0.01, drop path 0.3): 46.68 mIoU.
# The backbone pools its agents to the official 9x9, 12x12, 14x14, 7x7 grids (`downstream_cfg` of zoo_agent_swin).
_base_ = "./_base_/upernet_zoo-agent_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_agent_swin_tiny", drop_path_rate=0.3),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384),
)
