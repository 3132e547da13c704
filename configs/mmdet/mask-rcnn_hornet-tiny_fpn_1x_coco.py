# Mask R-CNN 1x on COCO with zoo_hornet_tiny.
# No weight decay on 1-D parameters (biases, norms, layer scales), as the official constructor does.
# Official: raoyongming/HorNet reports HorNet-T with Cascade Mask R-CNN 3x only
# (`object_detection/configs/hornet/cascade_mask_rcnn_hornet_tiny_7x7_3x_coco_in1k.py`: AdamW lr 2e-4, weight
# decay 0.05, layer-wise lr decay 0.7 over 12 layers, drop path 0.4; 51.7 box AP): its settings, on Mask R-CNN 1x.
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_hornet_tiny", drop_path_rate=0.4),
    neck=dict(in_channels=[64, 128, 256, 512]),
)
optim_wrapper = dict(
    optimizer=dict(lr=2e-4),
    paramwise_cfg=dict(decay_rate=0.7, decay_type="layer_wise", num_layers=12, flat_decay_mult=0.0),
)
