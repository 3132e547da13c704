# The UperNet recipe of ./upernet_zoo_160k_ade20k-512x512.py for an Agent Attention model: no weight decay on the
# agent biases either, as in the official Agent-Swin UperNet config.
_base_ = ["./upernet_zoo_160k_ade20k-512x512.py", "../../_base_/agent_attention.py"]

optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.agent_bias_no_decay}}))
