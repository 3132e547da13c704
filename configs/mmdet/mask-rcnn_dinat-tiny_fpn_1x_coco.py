# Mask R-CNN 1x on COCO with zoo_dinat_tiny.
# Official: SHI-Labs/Neighborhood-Attention-Transformer reports DiNAT-T with Mask R-CNN 3x
# (`detection/configs/dinat/mask_rcnn_dinat_tiny_3x_coco.py`: AdamW lr 1e-4, weight decay 0.05, none on `rpb`,
# drop path 0.2, dilations for 800-pixel inputs): its settings, on the 1x schedule.
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_dinat_tiny", drop_path_rate=0.2,
                  dilations=((1, 28, 1), (1, 7, 1, 14), (1, 3, 1, 5, 1, 7) * 3, (1, 3, 1, 3, 1))),
    neck=dict(in_channels=[64, 128, 256, 512]),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={"rpb": dict(decay_mult=0.0)}))
