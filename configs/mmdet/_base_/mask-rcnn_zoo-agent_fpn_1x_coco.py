# The Mask R-CNN 1x recipe of ./mask-rcnn_zoo_fpn_1x_coco.py for an Agent Attention model: no weight decay on the
# agent biases either, as in the official Agent-Swin detection configs.
_base_ = ["./mask-rcnn_zoo_fpn_1x_coco.py", "../../_base_/agent_attention.py"]

optim_wrapper = dict(paramwise_cfg=dict(custom_keys={{_base_.agent_bias_no_decay}}))
