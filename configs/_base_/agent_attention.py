# No weight decay on Agent Attention's biases, as in the official Agent configs: the agent-to-position and
# position-to-agent maps (an, na), their row and column parts (ah, aw, ha, wa) and, in Agent-DeiT, the class
# token's (ac, ca). The Agent Attention recipes (`mmdet/_base_/mask-rcnn_zoo-agent_fpn_1x_coco.py`,
# `mmseg/_base_/upernet_zoo-agent_160k_ade20k-512x512.py`) take them with
# `optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.agent_bias_no_decay}}))`.
agent_bias_no_decay = {
    name: dict(decay_mult=0.0)
    for name in ("an_bias", "na_bias", "ah_bias", "aw_bias", "ha_bias", "wa_bias", "ac_bias", "ca_bias")
}
# Agent-DeiT: nor on its position embedding and class token.
agent_deit_no_decay = dict(agent_bias_no_decay, pos_embed=dict(decay_mult=0.0), cls_token=dict(decay_mult=0.0))
