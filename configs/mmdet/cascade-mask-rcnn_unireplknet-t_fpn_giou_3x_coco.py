# Cascade Mask R-CNN 3x (GIoU 4conv1fc heads, multi-scale crops) on COCO with zoo_unireplknet_t.
# No weight decay on 1-D parameters (biases, norms, layer scales), as the official constructor does; GRN's
# gamma and beta, 4-D there, are decayed.
# Official: AILab-CVC/UniRepLKNet `detection/configs/coco/casc_mask_rcnn_unireplknet_t_in1k_fpn_3x_coco.py`
# (AdamW lr 1e-4, weight decay 0.05, layer-wise lr decay 0.8 over 12 layers, drop path 0.3, SyncBN, 16 images a
# step): 51.7 box AP / 44.9 mask AP.
_base_ = "./_base_/cascade-mask-rcnn_zoo_fpn_giou_3x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_unireplknet_t", drop_path_rate=0.3, norm_cfg=dict(type="SyncBN")),
    neck=dict(in_channels=[80, 160, 320, 640]),
)
optim_wrapper = dict(
    optimizer=dict(lr=1e-4),
    paramwise_cfg=dict(
        decay_rate=0.8, decay_type="layer_wise", num_layers=12, flat_decay_mult=0.0,
        custom_keys={".grn.": dict(decay_mult=1.0)},
    ),
)
