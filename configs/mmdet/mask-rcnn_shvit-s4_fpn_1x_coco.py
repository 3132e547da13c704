# Mask R-CNN 1x on COCO with zoo_shvit_s4.
# Official: ysj9909/SHViT `downstream/configs/mask_rcnn_shvit_s4_fpn_1x_coco.py` (AdamW lr 1e-4, weight decay
# 0.05, 500-iteration warm-up): 39.0 box AP / 35.9 mask AP. Its neck, EfficientViTFPN, upsamples the stride-16
# map to add stride-4 and -8 levels; mmdet has no such neck, so this FPN runs on strides 16-256 instead.
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_shvit_s4", out_indices=(0, 1, 2)),
    neck=dict(in_channels=[224, 336, 448]),
    rpn_head=dict(anchor_generator=dict(scales=[2], strides=[16, 32, 64, 128, 256])),
    roi_head=dict(
        bbox_roi_extractor=dict(featmap_strides=[16, 32, 64, 128]),
        mask_roi_extractor=dict(featmap_strides=[16, 32, 64, 128]),
    ),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type="MultiStepLR", begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
