# The UperNet recipe of ./upernet_zoo_160k_ade20k-512x512.py with ConvNeXt's official UperNet optimizer (mmseg's
# `convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py`), which the official segmentation code of HorNet,
# ParCNetV2 and SLaK keeps: AdamW lr 1e-4, weight decay 0.05, none on 1-D parameters (biases, norms, layer scales),
# stage-wise lr decay 0.9 over 6 layers.
_base_ = "./upernet_zoo_160k_ade20k-512x512.py"

optim_wrapper = dict(
    optimizer=dict(lr=1e-4, weight_decay=0.05),
    paramwise_cfg=dict(decay_rate=0.9, decay_type="stage_wise", num_layers=6, flat_decay_mult=0.0),
)
