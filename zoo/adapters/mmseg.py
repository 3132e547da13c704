"""Zoo backbones in mmsegmentation 1.x: importing this module registers ``ZooBackbone`` in mmseg's ``MODELS``.

In a config::

    custom_imports = dict(imports=["zoo.adapters.mmseg"], allow_failed_imports=False)
    model = dict(backbone=dict(type="ZooBackbone", model_name="zoo_swin_tiny", out_indices=(0, 1, 2, 3),
                               drop_path_rate=0.3, init_cfg=dict(type="Pretrained", checkpoint=".ms_in1k")),
                 decode_head=dict(in_channels=[96, 192, 384, 768]), auxiliary_head=dict(in_channels=384))

``optim_wrapper=dict(constructor="LayerDecayOptimWrapperConstructor", paramwise_cfg=dict(layer_decay_rate=...))``
adds layer-wise learning-rate decay. ``configs/mmseg/`` holds a config per family.
"""

from mmseg.registry import MODELS

from ._mm import LayerDecayOptimWrapperConstructor, ZooBackbone

__all__ = ["LayerDecayOptimWrapperConstructor", "ZooBackbone"]

MODELS.register_module(module=ZooBackbone)
