# UperNet 160k on ADE20K (512x512) with zoo_agent_deit_small, an isotropic backbone: blocks 3, 6, 9 and 12 feed
# a simple feature pyramid (strides 4, 8, 16, 32, 384 channels each).
# Agent Attention releases no segmentation code for Agent-DeiT: mmseg's DeiT-S UperNet settings
# (`vit/vit_deit-s16_upernet_8xb2-160k_ade20k-512x512.py`: AdamW lr 6e-5, weight decay 0.01, none on the position
# embedding, class token and norms, drop path 0.1), no weight decay on the agent biases either.
_base_ = "./_base_/upernet_zoo-agent_160k_ade20k-512x512.py"

model = dict(
    backbone=dict(model_name="zoo_agent_deit_small", out_indices=(2, 5, 8, 11), drop_path_rate=0.1),
    decode_head=dict(in_channels=[384] * 4),
    auxiliary_head=dict(in_channels=384),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.agent_deit_no_decay}}))
