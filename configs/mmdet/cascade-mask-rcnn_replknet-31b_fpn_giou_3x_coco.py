# Cascade Mask R-CNN 3x (GIoU 4conv1fc heads, multi-scale crops) on COCO with zoo_replknet_31b.
# Official: DingXiaoH/RepLKNet-pytorch `detection/configs/RepLKNet-31B_1Kpretrain_cascade_mask_rcnn_3x_coco.py`
# (AdamW lr 4e-4, weight decay 0.05, none on norms, no layer decay, drop path 0.6, SyncBN): 52.2 box AP / 45.2 mask
# AP. The official run put one image on each GPU (the GPU count is not given); this config keeps 16 images a step.
_base_ = "./_base_/cascade-mask-rcnn_zoo_fpn_giou_3x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_replknet_31b", drop_path_rate=0.6, norm_cfg=dict(type="SyncBN")),
    neck=dict(in_channels=[128, 256, 512, 1024]),
)
# the official constructor decays biases (mmcv's default), not norms
optim_wrapper = dict(optimizer=dict(lr=4e-4), paramwise_cfg=dict(bias_decay_mult=1.0))
