# Cascade Mask R-CNN + FPN with 4conv1fc GIoU box heads, 3x schedule (36 epochs, steps at 27 and 33),
# multi-scale training with random crops, 16 images per step (8 GPUs x 2), mixed precision, AdamW (lr 2e-4,
# weight decay 0.05) with layer-wise learning-rate decay: the recipe of Swin's and ConvNeXt's official Cascade 3x
# results (mmdet's ConvNeXt config), its ConvNeXt backbone replaced by a zoo backbone that starts from the model's
# ImageNet-1k weights (its `.in1k` tag: a config names another tag, or init_cfg=None). A family config sets the
# model name, drop path, the neck's in_channels, lr and the layer decay of its official config.
_base_ = "mmdet::convnext/cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py"

custom_imports = dict(imports=["zoo.adapters.mmdet"], allow_failed_imports=False)

model = dict(backbone=dict(_delete_=True, type="ZooBackbone", out_indices=(0, 1, 2, 3),
                           init_cfg=dict(type="Pretrained", checkpoint=".in1k")))
# ConvNeXt's layer decay is reset: no weight decay on norms and biases; a family config adds its own decay
optim_wrapper = dict(
    constructor="LayerDecayOptimWrapperConstructor",
    paramwise_cfg=dict(_delete_=True, norm_decay_mult=0.0, bias_decay_mult=0.0),
)
