"""The OpenMMLab adapters inside real detectors and segmenters (`make test-openmmlab`: needs mmcv's compiled ops).

For one model of every family: Mask R-CNN and UperNet built from the repository's configs (with the
family's tiny instance as backbone) run one training iteration on a synthetic batch on the CPU. And the
zoo Swin-T backbone inside mmdet gives the feature maps of mmdet's own SwinTransformer with the same
weights, at a window-aligned input size and at one that needs padding.
"""

import re
from pathlib import Path

import pytest
import timm
import torch

pytest.importorskip("mmcv.ops", reason="mmcv with compiled ops is not installed: run `make openmmlab`")
pytest.importorskip("mmdet", reason="mmdet is not installed: run `make openmmlab`")
pytest.importorskip("mmseg", reason="mmsegmentation is not installed: run `make openmmlab`")

from adapter_families import FAMILY_MODELS, dense_kwargs, is_isotropic  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.model import revert_sync_batchnorm  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402

import zoo.adapters.mmdet  # noqa: E402, F401  (registers ZooBackbone in mmdet)
import zoo.adapters.mmseg  # noqa: E402, F401  (registers ZooBackbone in mmseg)
from zoo.adapters._mm import ZooBackbone  # noqa: E402

pytestmark = pytest.mark.openmmlab

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
HEIGHT, WIDTH = 96, 128
_TRAINED_CONFIGS = {"mmdet": "mask-rcnn_*.py", "mmseg": "upernet_*.py"}  # the Cascade ones have their own test


def _config_for(task: str, model_name: str) -> Config:
    """The repository's Mask R-CNN ("mmdet") or UperNet ("mmseg") config of ``model_name``'s family."""
    family = timm.models.model_entrypoint(model_name).__module__
    for path in sorted((CONFIGS / task).glob(_TRAINED_CONFIGS[task])):
        config_model = re.search(r'model_name="(\w+)"', path.read_text()).group(1)
        if timm.models.model_entrypoint(config_model).__module__ == family:
            return Config.fromfile(str(path))
    raise LookupError(f"configs/{task} has no {_TRAINED_CONFIGS[task]} config for {family}")


def _tiny_backbone_cfg(cfg: Config, model_name: str) -> tuple[dict, list[int]]:
    """The config's backbone with the family's tiny instance in place of the full one, and its channels."""
    # an isotropic tiny instance is four blocks deep: its pyramid takes them all
    out_indices = None if is_isotropic(model_name) else cfg.model.backbone.out_indices
    backbone = dict(type="ZooBackbone", model_name=model_name, out_indices=out_indices, init_cfg=None,
                    **dense_kwargs(model_name))
    channels = ZooBackbone(**{k: v for k, v in backbone.items() if k != "type"}).out_channels
    return backbone, channels


def _train_one_iteration(model, cfg: Config, data: dict) -> dict:
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    return model.train_step(data, optim_wrapper)


def _train_detector(cfg: Config, model_name: str) -> dict:
    """One training iteration of the config's detector on a synthetic batch, with ``model_name``'s tiny
    backbone and 32-channel neck and heads (fp32, plain optimizer: mixed precision needs a GPU)."""
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs

    init_default_scope("mmdet")
    cfg.model.backbone, cfg.model.neck.in_channels = _tiny_backbone_cfg(cfg, model_name)
    cfg.model.neck.out_channels = 32
    cfg.model.rpn_head.in_channels = cfg.model.rpn_head.feat_channels = 32
    for extractor in ("bbox_roi_extractor", "mask_roi_extractor"):
        cfg.model.roi_head[extractor].out_channels = 32
    bbox_heads = cfg.model.roi_head.bbox_head  # a list in the cascade
    for head in bbox_heads if isinstance(bbox_heads, list) else [bbox_heads]:
        head.update(in_channels=32, fc_out_channels=64)
        if "conv_out_channels" in head:
            head.conv_out_channels = 32
    cfg.model.roi_head.mask_head.update(in_channels=32, conv_out_channels=32)
    cfg.optim_wrapper.type = "OptimWrapper"
    cfg.optim_wrapper.pop("loss_scale", None)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))  # SyncBN heads need a process group

    torch.manual_seed(0)
    data = demo_mm_inputs(batch_size=2, image_shapes=[(3, HEIGHT, WIDTH)] * 2, num_classes=80, with_mask=True)
    losses = _train_one_iteration(model, cfg, data)
    assert torch.isfinite(losses["loss"]), losses
    return losses


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_mask_rcnn_trains_one_iteration(name):
    losses = _train_detector(_config_for("mmdet", name), name)
    assert {"loss_rpn_cls", "loss_cls", "loss_bbox", "loss_mask"} <= set(losses)


@pytest.mark.parametrize("path", sorted((CONFIGS / "mmdet").glob("cascade-mask-rcnn_*.py")), ids=lambda p: p.stem)
def test_cascade_mask_rcnn_trains_one_iteration(path):
    cfg = Config.fromfile(str(path))
    losses = _train_detector(cfg, cfg.model.backbone.model_name)
    assert {"s0.loss_cls", "s2.loss_bbox", "s2.loss_mask"} <= set(losses)


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_upernet_trains_one_iteration(name):
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    init_default_scope("mmseg")
    cfg = _config_for("mmseg", name)
    backbone, channels = _tiny_backbone_cfg(cfg, name)
    cfg.model.backbone = backbone
    cfg.model.data_preprocessor.size = None
    cfg.model.data_preprocessor.size_divisor = 32
    cfg.model.decode_head.update(in_channels=[channels[i] for i in cfg.model.decode_head.in_index], channels=32)
    cfg.model.auxiliary_head.update(in_channels=channels[cfg.model.auxiliary_head.in_index], channels=16)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))  # SyncBN heads need a process group

    torch.manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, HEIGHT, WIDTH), dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(HEIGHT, WIDTH), ori_shape=(HEIGHT, WIDTH)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, HEIGHT, WIDTH)))
        samples.append(sample)
    losses = _train_one_iteration(model, cfg, dict(inputs=inputs, data_samples=samples))
    assert {"decode.loss_ce", "aux.loss_ce"} <= set(losses)
    assert torch.isfinite(losses["loss"]), losses


def _randomize(module: torch.nn.Module) -> None:
    """Weights far from their initial values, so that a misplaced tensor cannot go unnoticed."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            param.copy_(1 + 0.1 * noise if "norm" in name and name.endswith("weight") else 0.05 * noise)


def _zoo_to_mmdet(backbone: ZooBackbone) -> dict:
    """The backbone's weights in mmdet's SwinTransformer layout: back to the official layout (patch merging
    at the end of the previous stage), then through mmdet's own converter (nn.Unfold's channel order)."""
    from mmdet.models.backbones.swin import swin_converter

    official = {}
    for key, value in backbone.body.features.model.state_dict().items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        official[key] = value
    converted = {k.removeprefix("backbone."): v for k, v in swin_converter(official).items()}
    for i in range(4):
        norm = getattr(backbone.body, f"norm{i}")
        converted[f"norm{i}.weight"], converted[f"norm{i}.bias"] = norm.weight, norm.bias
    return converted


@pytest.mark.parametrize("size", [(224, 224), (190, 250)], ids=["window-aligned", "padded"])
def test_zoo_swin_matches_mmdet_swin(size):
    from mmdet.models.backbones import SwinTransformer

    zoo_swin = ZooBackbone("zoo_swin_tiny", drop_path_rate=0.0).eval()
    _randomize(zoo_swin)
    mmdet_swin = SwinTransformer(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
                                 drop_path_rate=0.0, out_indices=(0, 1, 2, 3))
    mmdet_swin.eval()  # its train() returns None
    missing, unexpected = mmdet_swin.load_state_dict(_zoo_to_mmdet(zoo_swin), strict=False)
    assert not unexpected and all(k.endswith("relative_position_index") for k in missing), (missing, unexpected)

    torch.manual_seed(0)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        ours, theirs = zoo_swin(x), mmdet_swin(x)
    assert len(ours) == len(theirs) == 4
    for stage, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, stage
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"stage {stage}")
