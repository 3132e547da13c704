# UperNet 160k on ADE20K (512x512) with zoo_agent_pvt_tiny.
# Agent Attention reports Agent-PVT-T with Semantic FPN 40k only (`downstream/segmentation/configs/agent_pvt/
# fpn_agent_pvt_t_12-16-28-28.py`: AdamW lr 2e-4, weight decay 1e-4, drop path 0.1; 40.18 mIoU). The closest
# official UperNet 160k settings are its Agent-Swin ones (`upernet_agent_swin_t_9-12-14-7.py`: AdamW lr 6e-5,
# weight decay 0.01, none on norms and agent biases): those, with the Semantic FPN config's drop path 0.1.
# The backbone pools its agents to the official 12x12, 16x16, 28x28, 28x28 grids (`downstream_cfg` of zoo_agent_pvt).
_base_ = "./_base_/upernet_zoo-agent_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_agent_pvt_tiny", drop_path_rate=0.1),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320),
)
