# Cascade Mask R-CNN 3x (GIoU 4conv1fc heads, multi-scale crops) on COCO with zoo_slak_tiny.
# No weight decay on 1-D parameters (biases, norms, layer scales), as the official constructor does.
# Official: VITA-Group/SLaK
# `detection/configs/cascade_mask_rcnn_slak_tiny_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco_in1k.py`
# (300-epoch ImageNet model; AdamW lr 2e-4, weight decay 0.05, layer-wise lr decay 0.7 over 6 layers, drop path
# 0.4, SyncBN, 16 images a step): 51.3 box AP / 44.3 mask AP. The official fine-tuning keeps the zeros of the
# sparse pretrained kernels (`sparse=True`); here they are fine-tuned dense.
_base_ = "./_base_/cascade-mask-rcnn_zoo_fpn_giou_3x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_slak_tiny", drop_path_rate=0.4, norm_cfg=dict(type="SyncBN")),
    neck=dict(in_channels=[124, 249, 499, 998]),
)
optim_wrapper = dict(paramwise_cfg=dict(decay_rate=0.7, decay_type="layer_wise", num_layers=6, flat_decay_mult=0.0))
