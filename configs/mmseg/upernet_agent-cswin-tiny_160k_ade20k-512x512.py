# UperNet 160k on ADE20K (512x512) with zoo_agent_cswin_tiny.
# Agent Attention releases segmentation code for Agent-Swin and Agent-PVT only: the CSWin trunk's official
# settings (microsoft/CSWin-Transformer `segmentation/configs/cswin/upernet_cswin_tiny.py`: AdamW lr 6e-5, weight
# decay 0.01, drop path 0.3), with no weight decay on the agent biases as in the official Agent-Swin UperNet config.
_base_ = "./_base_/upernet_zoo-agent_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_agent_cswin_tiny", drop_path_rate=0.3),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256),
)
