# Mask R-CNN 1x on COCO with zoo_parcnetv2_t.
# No weight decay on 1-D parameters (biases, norms, layer scales), as the official constructor does.
# Official: XuRuihan/ParCNetV2 reports ParCNetV2-T with Mask R-CNN 3x
# (`object_detection/configs/mask_rcnn/mask_rcnn_parcnetv2_tiny_..._adamw_3x_coco_in1k.py`: AdamW lr 1e-4, weight
# decay 0.05, layer-wise lr decay 0.95 over 7 layers, drop path 0.4): its settings, on the 1x schedule.
# No ParCNetV2 weights are released: set init_cfg to a checkpoint of your own.
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_parcnetv2_t", drop_path_rate=0.4, init_cfg=None),
    neck=dict(in_channels=[64, 128, 320, 512]),
)
optim_wrapper = dict(paramwise_cfg=dict(decay_rate=0.95, decay_type="layer_wise", num_layers=7, flat_decay_mult=0.0))
