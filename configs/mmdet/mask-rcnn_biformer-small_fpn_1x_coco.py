# Mask R-CNN 1x on COCO with zoo_biformer_small.
# Official: rayleizhu/BiFormer `object_detection/configs/coco/maskrcnn.1x.biformer_small.py`
# (AdamW lr 1e-4, weight decay 0.05, drop path 0.2, 16x16 routing regions, the stem's BatchNorm statistics
# frozen): 47.8 box AP / 43.2 mask AP.
_base_ = "./_base_/mask-rcnn_zoo_fpn_1x_coco.py"

model = dict(
    backbone=dict(model_name="zoo_biformer_small", drop_path_rate=0.2, n_win=16, norm_eval=True),
    neck=dict(in_channels=[64, 128, 256, 512]),
)
