# Mask R-CNN + FPN, 1x schedule (12 epochs, steps at 8 and 11, 1000-iteration warm-up), COCO instance
# segmentation, 16 images per step (8 GPUs x 2), AdamW with no weight decay on norms and position biases:
# mmdet's Swin Mask R-CNN 1x recipe, its Swin backbone replaced by a zoo backbone.
_base_ = "mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py"

custom_imports = dict(imports=["zoo.adapters.mmdet"], allow_failed_imports=False)

model = dict(backbone=dict(_delete_=True, type="ZooBackbone", out_indices=(0, 1, 2, 3)))
optim_wrapper = dict(constructor="LayerDecayOptimWrapperConstructor")
