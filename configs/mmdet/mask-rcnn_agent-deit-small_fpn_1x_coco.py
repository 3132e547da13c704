# Mask R-CNN 1x on COCO with zoo_agent_deit_small, an isotropic backbone: blocks 3, 6, 9 and 12 feed a simple
# feature pyramid (strides 4, 8, 16, 32, 384 channels each).
# Agent Attention releases no detection code for Agent-DeiT: Swin-T's official Mask R-CNN 1x settings (AdamW
# lr 1e-4, weight decay 0.05) with DeiT-S's drop path 0.1, no weight decay on the position embedding, class token
# and agent biases.
_base_ = "./_base_/mask-rcnn_zoo-agent_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_agent_deit_small", out_indices=(2, 5, 8, 11), drop_path_rate=0.1),
    neck=dict(in_channels=[384] * 4),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.agent_deit_no_decay}}))
