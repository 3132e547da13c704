# Mask R-CNN + FPN, 1x schedule (12 epochs, steps at 8 and 11, 1000-iteration warm-up), COCO instance
# segmentation, 16 images per step (8 GPUs x 2), AdamW (lr 1e-4, weight decay 0.05, none on norms and position
# biases): mmdet's Swin Mask R-CNN 1x recipe, its Swin backbone replaced by a zoo backbone that starts from the
# model's ImageNet-1k weights (its `.in1k` tag: a config names another tag, or init_cfg=None).
_base_ = "mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py"

custom_imports = dict(imports=["zoo.adapters.mmdet"], allow_failed_imports=False)

model = dict(backbone=dict(_delete_=True, type="ZooBackbone", out_indices=(0, 1, 2, 3),
                           init_cfg=dict(type="Pretrained", checkpoint=".in1k")))
optim_wrapper = dict(constructor="LayerDecayOptimWrapperConstructor")
