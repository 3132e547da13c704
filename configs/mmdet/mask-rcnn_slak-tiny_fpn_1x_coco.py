# Mask R-CNN 1x on COCO with zoo_slak_tiny.
# No weight decay on 1-D parameters (biases, norms, layer scales), as the official constructor does.
# Official: VITA-Group/SLaK reports SLaK-T with Cascade Mask R-CNN only; its 1x one
# (`detection/configs/cascade_mask_rcnn_slak_tiny_120_..._giou_4conv1f_adamw_3x_coco_in1k.py`, 12 epochs from the
# 120-epoch ImageNet model: AdamW lr 2e-4, weight decay 0.05, layer-wise lr decay 0.7 over 6 layers, drop path 0.4,
# SyncBN) gives 48.4 box AP / 41.8 mask AP: its settings and weights, with Mask R-CNN. The official fine-tuning
# keeps the zeros of the sparse pretrained kernels (`sparse=True`); here they are fine-tuned dense.
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_slak_tiny", drop_path_rate=0.4, norm_cfg=dict(type="SyncBN"),
                  init_cfg=dict(checkpoint=".in1k_e120")),
    neck=dict(in_channels=[124, 249, 499, 998]),
)
optim_wrapper = dict(
    optimizer=dict(lr=2e-4),
    paramwise_cfg=dict(decay_rate=0.7, decay_type="layer_wise", num_layers=6, flat_decay_mult=0.0),
)
