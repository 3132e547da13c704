# Mask R-CNN 1x on COCO with zoo_replknet_31b.
# Official: DingXiaoH/RepLKNet-pytorch reports RepLKNet-31B (ImageNet-1K) with Cascade Mask R-CNN 3x only
# (`detection/configs/RepLKNet-31B_1Kpretrain_cascade_mask_rcnn_3x_coco.py`: AdamW lr 4e-4, weight decay 0.05, none
# on norms, no layer decay, drop path 0.6, SyncBN): its settings, on the 1x schedule.
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_replknet_31b", drop_path_rate=0.6, norm_cfg=dict(type="SyncBN")),
    neck=dict(in_channels=[128, 256, 512, 1024]),
)
optim_wrapper = dict(optimizer=dict(lr=4e-4), paramwise_cfg=dict(norm_decay_mult=0.0))
