# Mask R-CNN 1x on COCO with zoo_nat_tiny.
# Official: SHI-Labs/Neighborhood-Attention-Transformer reports NAT-T with Mask R-CNN 3x
# (`detection/configs/nat/mask_rcnn_nat_tiny_3x_coco.py`: AdamW lr 1e-4, weight decay 0.05, none on `rpb`,
# drop path 0.2): its settings, on the 1x schedule.
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_nat_tiny", drop_path_rate=0.2),
    neck=dict(in_channels=[64, 128, 256, 512]),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={"rpb": dict(decay_mult=0.0)}))
