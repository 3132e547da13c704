# The Mask R-CNN 1x recipe of ./mask-rcnn_zoo_fpn_1x_coco.py with the official Mask R-CNN 1x settings of the PVT
# trunk, as Agent Attention keeps them for Agent-PVT (`agent_pvt_t_mrcnn_1x_12-16-28-28.py`): AdamW lr 2e-4, weight
# decay 1e-4 on every parameter, a 500-iteration warm-up (mmdet 2's 1x schedule).
_base_ = "./mask-rcnn_zoo_fpn_1x_coco.py"

optim_wrapper = dict(optimizer=dict(lr=2e-4, weight_decay=1e-4), paramwise_cfg=dict(_delete_=True))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type="MultiStepLR", begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
