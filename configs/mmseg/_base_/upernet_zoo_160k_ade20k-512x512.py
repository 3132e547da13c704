# UperNet, 160k iterations on ADE20K at 512x512, 16 images per step (8 GPUs x 2), AdamW (lr 6e-5, weight
# decay 0.01, none on norms and position biases), 1500-iteration warm-up then poly decay: mmseg's Swin
# UperNet recipe, its Swin backbone replaced by a zoo backbone that starts from the model's ImageNet-1k weights
# (its `.in1k` tag: a config names another tag, or init_cfg=None).
_base_ = "mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py"

custom_imports = dict(imports=["zoo.adapters.mmseg"], allow_failed_imports=False)

model = dict(backbone=dict(_delete_=True, type="ZooBackbone", out_indices=(0, 1, 2, 3),
                           init_cfg=dict(type="Pretrained", checkpoint=".in1k")))
optim_wrapper = dict(constructor="LayerDecayOptimWrapperConstructor")
