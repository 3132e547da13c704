# Mask R-CNN 1x on COCO with zoo_ffnet_2.
# No weight decay on 1-D parameters (biases, norms, layer scales), as the official constructor does.
# Official: ysj9909/FFNet reports FFNet-2 (distilled ImageNet model) with Cascade Mask R-CNN 3x only
# (`detection/configs/coco/casc_mask_rcnn_ffnet_2_fpn_3x_coco.py`: AdamW lr 1e-4, weight decay 0.05, layer-wise lr
# decay 0.8 over 12 layers, drop path 0.35, SyncBN): its settings, on the 1x schedule. The official constructor
# leaves the stem at the full lr (its names match none of its layer rules) and counts each stage's downsampling
# as block 0 of the stage (shifting the third stage's groups of 3 blocks by one); here the stem is layer 0 and
# the blocks are counted from 0.
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_ffnet_2", drop_path_rate=0.35, norm_cfg=dict(type="SyncBN"),
                  init_cfg=dict(checkpoint=".dist_in1k")),
    neck=dict(in_channels=[88, 176, 352, 704]),
)
optim_wrapper = dict(paramwise_cfg=dict(decay_rate=0.8, decay_type="layer_wise", num_layers=12, flat_decay_mult=0.0))
