"""zoo.adapters._mm (ZooBackbone, the layer-decay optimizer constructor) and the mmdet / mmseg configs:
the parts that need mmengine but not mmcv's compiled ops (`make test-openmmlab` builds the detectors)."""

import re
from functools import cache
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn

pytest.importorskip("mmengine", reason="mmengine is not installed: `make openmmlab` installs the OpenMMLab stack")

from mmengine.config import Config  # noqa: E402
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS  # noqa: E402

from zoo.adapters._mm import ZooBackbone  # noqa: E402
from zoo.adapters.mm_run import _parser, build_config  # noqa: E402
from zoo.models import tiny_kwargs  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DET_CONFIGS = sorted((CONFIGS / "mmdet").glob("*.py"))
SEG_CONFIGS = sorted((CONFIGS / "mmseg").glob("*.py"))
SCHEDULE_EPOCHS = {"1x": 12, "3x": 36}  # mmdet's schedules, named in the config file names


def _installed(package: str) -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution(package)
    except PackageNotFoundError:
        return False
    return True


@cache
def _channels(model_name: str) -> list[int]:
    with torch.device("meta"):
        return [info["num_chs"] for info in timm.create_model(model_name).feature_info]


def _stage_channels(model_name: str, out_indices) -> list[int]:
    return [_channels(model_name)[i] for i in out_indices]


def _families_with_configs(paths) -> set[str]:
    return {timm.models.model_entrypoint(_backbone(p)["model_name"]).__module__ for p in paths}


def _backbone(path) -> dict:
    text = path.read_text()
    return dict(model_name=re.search(r'model_name="(\w+)"', text).group(1))


def test_every_family_has_a_detection_and_a_segmentation_config():
    families = {timm.models.model_entrypoint(name).__module__ for name in timm.list_models("zoo_*")}
    assert _families_with_configs(DET_CONFIGS) == families
    assert _families_with_configs(SEG_CONFIGS) == families


@pytest.mark.skipif(not _installed("mmdet"), reason="mmdet is not installed (`make openmmlab`)")
@pytest.mark.parametrize("path", DET_CONFIGS, ids=lambda p: p.stem)
def test_detection_config_matches_its_backbone(path):
    cfg, channels = _config_and_channels(path, "zoo.adapters.mmdet")
    assert cfg.model.neck.in_channels == channels
    assert cfg.optim_wrapper.constructor == "LayerDecayOptimWrapperConstructor"
    schedule = re.search(r"_(\d+x)_coco", path.name).group(1)
    assert cfg.train_cfg.max_epochs == SCHEDULE_EPOCHS[schedule]


@pytest.mark.skipif(not _installed("mmsegmentation"), reason="mmsegmentation is not installed (`make openmmlab`)")
@pytest.mark.parametrize("path", SEG_CONFIGS, ids=lambda p: p.stem)
def test_segmentation_config_matches_its_backbone(path):
    cfg, channels = _config_and_channels(path, "zoo.adapters.mmseg")
    head = cfg.model.decode_head
    assert [channels[i] for i in head.in_index] == head.in_channels
    assert cfg.model.auxiliary_head.in_channels == channels[cfg.model.auxiliary_head.in_index]
    assert cfg.train_cfg.max_iters == 160000 and cfg.crop_size == (512, 512)


def _config_and_channels(path, adapter: str) -> tuple[Config, list[int]]:
    """The config at ``path``, checked for what every config needs (the adapter imported, a registered zoo
    backbone with an existing pretrained tag, AdamW), and its backbone's channels."""
    cfg = Config.fromfile(str(path), import_custom_modules=False)
    backbone = cfg.model.backbone
    assert cfg.custom_imports.imports == [adapter]
    assert backbone.type == "ZooBackbone" and backbone.model_name in timm.list_models("zoo_*")
    _check_pretrained(backbone)
    assert cfg.optim_wrapper.optimizer.type == "AdamW"
    return cfg, _stage_channels(backbone.model_name, backbone.out_indices)


def _check_pretrained(backbone):
    if backbone.init_cfg is not None:
        tag = backbone.init_cfg.checkpoint
        assert backbone.model_name + tag in timm.list_pretrained(backbone.model_name + ".*")


def _tiny_backbone(name="zoo_swin_tiny", **kwargs) -> ZooBackbone:
    return ZooBackbone(name, **{**tiny_kwargs(name), **kwargs})


def test_zoo_backbone_returns_the_stage_maps_with_output_norms():
    backbone = _tiny_backbone().eval()
    maps = backbone(torch.randn(2, 3, 80, 112))
    assert [m.shape for m in maps] == [
        (2, c, -(-80 // s), -(-112 // s)) for c, s in zip(backbone.out_channels, (4, 8, 16, 32))
    ]
    assert backbone.out_channels == [16, 32, 64, 128]
    for i in range(4):  # the official Swin detection backbone's output norms
        assert isinstance(getattr(backbone.body, f"norm{i}"), nn.Module)


def _official_swin_layout(state_dict: dict) -> dict:
    """A timm-layout Swin state dict written the way microsoft/Swin-Transformer saves it."""
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        out[key.replace("head.fc.", "head.")] = value
    return {"model": out}


def test_init_cfg_loads_an_official_checkpoint_file(tmp_path):
    # built at 128x128, every stage's map holds a full window, as in the downstream backbone
    reference = timm.create_model("zoo_swin_tiny", **{**tiny_kwargs("zoo_swin_tiny"), "img_size": 128})
    path = tmp_path / "swin_official.pth"
    torch.save(_official_swin_layout(reference.state_dict()), path)
    backbone = _tiny_backbone(init_cfg=dict(type="Pretrained", checkpoint=str(path)))
    backbone.init_weights()
    loaded = backbone.body.features.model.state_dict()
    expected = reference.state_dict()
    assert loaded.keys() <= expected.keys()
    for key, value in loaded.items():
        torch.testing.assert_close(value, expected[key], msg=key)


def _official_swin_detector(tmp_path, with_norms: bool = True):
    """An official (Swin-Transformer-Object-Detection layout) detector checkpoint over a random tiny Swin:
    the path, the backbone's reference weights in the zoo layout, and its output norms."""
    reference = timm.create_model("zoo_swin_tiny", **{**tiny_kwargs("zoo_swin_tiny"), "img_size": 128})
    backbone = {k: v for k, v in _official_swin_layout(reference.state_dict())["model"].items()
                if not k.startswith(("head.", "norm."))}
    gen = torch.Generator().manual_seed(0)
    norms = {f"norm{i}.{p}": torch.randn(c, generator=gen) for i, c in enumerate((16, 32, 64, 128))
             for p in ("weight", "bias")} if with_norms else {}
    detector = {f"backbone.{k}": v for k, v in {**backbone, **norms}.items()}
    detector["head.weight"], detector["head.bias"] = torch.ones(4, 4), torch.zeros(4)
    path = tmp_path / "mask_rcnn_swin_official.pth"
    torch.save({"meta": {}, "state_dict": detector}, path)
    return path, reference.state_dict(), norms


def _check_loaded(backbone: ZooBackbone, reference: dict, norms: dict) -> None:
    for key, value in backbone.body.features.model.state_dict().items():
        torch.testing.assert_close(value, reference[key], msg=key)
    for key, value in norms.items():
        torch.testing.assert_close(backbone.body.get_parameter(key), value, msg=key)


def test_an_official_detector_checkpoint_loads_whole(tmp_path):
    from mmengine.runner import load_checkpoint

    path, reference, norms = _official_swin_detector(tmp_path)
    model = _Detector(_tiny_backbone())
    load_checkpoint(model, str(path), strict=True)  # what a config's `load_from` does
    _check_loaded(model.backbone, reference, norms)
    torch.testing.assert_close(model.head.weight, torch.ones(4, 4))


def test_init_cfg_with_a_prefix_loads_the_backbone_of_a_detector_checkpoint(tmp_path):
    path, reference, norms = _official_swin_detector(tmp_path)
    backbone = _tiny_backbone(init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."))
    backbone.init_weights()
    _check_loaded(backbone, reference, norms)


def test_a_detector_checkpoint_that_does_not_fit_is_refused(tmp_path):
    from zoo.hub import WeightsError

    path, *_ = _official_swin_detector(tmp_path, with_norms=False)
    backbone = _tiny_backbone(init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."))
    with pytest.raises(WeightsError, match=r"no output norms \['norm0.weight'"):
        backbone.init_weights()
    other = _tiny_backbone("zoo_van_b0", init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="backbone."))
    with pytest.raises(WeightsError, match="is not a zoo_van_b0 downstream backbone"):
        other.init_weights()
    with pytest.raises(WeightsError, match="has no keys under 'neck.'"):
        _tiny_backbone(init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="neck.")).init_weights()


def test_init_cfg_rejects_an_unknown_checkpoint():
    backbone = _tiny_backbone(init_cfg=dict(type="Pretrained", checkpoint="no/such/file.pth"))
    with pytest.raises(ValueError, match="neither a pretrained tag of zoo_swin_tiny"):
        backbone.init_weights()


def test_frozen_stages_and_sync_batch_norm():
    backbone = _tiny_backbone("zoo_van_b0", frozen_stages=2, norm_cfg=dict(type="SyncBN"))
    model = backbone.body.features.model
    assert all(not p.requires_grad for p in model.stages[:2].parameters())
    assert all(p.requires_grad for p in model.stages[2:].parameters())
    assert any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    with pytest.raises(ValueError, match="norm_cfg type must be one of"):
        _tiny_backbone("zoo_van_b0", norm_cfg=dict(type="GN"))


class _Detector(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(4, 4)


def _learning_rates(model, paramwise_cfg, lr=1.0):
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type="LayerDecayOptimWrapperConstructor",
        optim_wrapper_cfg=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=lr, weight_decay=0.05)),
        paramwise_cfg=paramwise_cfg,
    ))
    optimizer = constructor(model).optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(g["params"][0])]: g["lr"] for g in optimizer.param_groups}


def test_stage_wise_layer_decay():
    model = _Detector(_tiny_backbone("zoo_hornet_tiny"))
    lrs = _learning_rates(model, dict(decay_rate=0.5, decay_type="stage_wise", num_layers=6))
    prefix = "backbone.body.features.model."
    # layer ids: stem and downsamplings 0, stage i's blocks i + 1, the head N + 1 = 7 -> lr 0.5 ** (7 - id)
    assert lrs[prefix + "stem.0.weight"] == 0.5**7
    assert lrs[prefix + "stages.2.downsample.1.weight"] == 0.5**7
    assert lrs[prefix + "stages.0.blocks.0.gamma1"] == 0.5**6
    assert lrs[prefix + "stages.3.blocks.0.gamma1"] == 0.5**3
    assert lrs["head.weight"] == 1.0


def test_layer_wise_layer_decay_groups_the_deepest_stage_by_three():
    model = _Detector(_tiny_backbone("zoo_hornet_tiny", depths=(1, 1, 4, 1)))
    lrs = _learning_rates(model, dict(decay_rate=0.5, decay_type="layer_wise", num_layers=12))
    prefix = "backbone.body.features.model."
    expected = {"stem.0.weight": 0, "stages.0.blocks.0.gamma1": 1, "stages.1.downsample.1.weight": 2,
                "stages.2.blocks.0.gamma1": 3, "stages.2.blocks.2.gamma1": 3, "stages.2.blocks.3.gamma1": 4,
                "stages.3.blocks.0.gamma1": 12}
    for name, layer in expected.items():
        assert lrs[prefix + name] == 0.5 ** (13 - layer), name
    assert lrs["head.weight"] == 1.0


def test_layer_decay_combines_with_custom_keys_and_checks_its_arguments():
    model = _Detector(_tiny_backbone("zoo_hornet_tiny"))
    lrs = _learning_rates(model, dict(decay_rate=0.5, num_layers=6, custom_keys={"head": dict(lr_mult=0.1)}))
    assert lrs["head.weight"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="decay_type must be"):
        _learning_rates(model, dict(decay_rate=0.5, decay_type="block_wise", num_layers=6))
    with pytest.raises(ValueError, match="needs num_layers"):
        _learning_rates(model, dict(decay_rate=0.5))


@pytest.mark.skipif(not _installed("mmdet"), reason="mmdet is not installed (`make openmmlab`)")
def test_zoo_mm_applies_the_command_line_to_the_config():
    config = str(CONFIGS / "mmdet" / "mask-rcnn_swin-tiny_fpn_1x_coco.py")
    args = _parser().parse_args(["train", config, "--amp", "--resume", "--cfg-options", "train_cfg.max_epochs=2"])
    cfg = build_config(args)
    assert cfg.work_dir == "work_dirs/mask-rcnn_swin-tiny_fpn_1x_coco"
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.loss_scale == "dynamic"
    assert cfg.resume is True and cfg.load_from is None
    assert cfg.train_cfg.max_epochs == 2 and cfg.launcher == "none"

    args = _parser().parse_args(["test", config, "ckpt.pth", "--work-dir", "out", "--launcher", "pytorch"])
    cfg = build_config(args)
    assert (cfg.load_from, cfg.work_dir, cfg.launcher) == ("ckpt.pth", "out", "pytorch")
