"""NAT / DiNAT: official and Hugging Face checkpoint layouts, parameter counts, padding of small maps and
input sizes (autocast: test_autocast.py)."""

import re

import _family_checks as checks
import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.models.nat import NeighborhoodAttention

# Parameter counts of the official models (SHI-Labs classification/nat.py, dinat.py), instantiated.
OFFICIAL_PARAMS = {
    "zoo_nat_mini": 19_984_174,
    "zoo_nat_tiny": 27_901_582,
    "zoo_nat_small": 50_743_297,
    "zoo_nat_base": 89_769_652,
    "zoo_dinat_mini": 19_984_174,
    "zoo_dinat_tiny": 27_901_582,
    "zoo_dinat_small": 50_719_681,  # DiNAT-S has no layer scale, NAT-S has
    "zoo_dinat_base": 89_769_652,
}
# The official dilation schedules (dinat.py).
OFFICIAL_DILATIONS = {
    "zoo_dinat_mini": [[1, 8, 1], [1, 4, 1, 4], [1, 2] * 3, [1] * 5],
    "zoo_dinat_tiny": [[1, 8, 1], [1, 4, 1, 4], [1, 2] * 9, [1] * 5],
}
SMALL = dict(embed_dim=32, depths=(1, 2, 1, 1), num_heads=(1, 2, 4, 4), mlp_ratio=2.0, kernel_size=5)


def _official_state_dict(embed_dim, depths, num_heads, mlp_ratio, kernel_size, layer_scale, num_classes=1000):
    """Random weights under the official key names and shapes (``NAT`` of classification/nat.py)."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    sd = {
        "patch_embed.proj.0.weight": rand(embed_dim // 2, 3, 3, 3),
        "patch_embed.proj.0.bias": rand(embed_dim // 2),
        "patch_embed.proj.1.weight": rand(embed_dim, embed_dim // 2, 3, 3),
        "patch_embed.proj.1.bias": rand(embed_dim),
        "patch_embed.norm.weight": 1 + rand(embed_dim),
        "patch_embed.norm.bias": rand(embed_dim),
    }
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        dim, hidden = embed_dim * 2**i, int(embed_dim * 2**i * mlp_ratio)
        for j in range(depth):
            p = f"levels.{i}.blocks.{j}."
            sd.update(
                {
                    p + "norm1.weight": 1 + rand(dim),
                    p + "norm1.bias": rand(dim),
                    p + "attn.qkv.weight": rand(3 * dim, dim),
                    p + "attn.qkv.bias": rand(3 * dim),
                    p + "attn.rpb": rand(heads, 2 * kernel_size - 1, 2 * kernel_size - 1) * 10,
                    p + "attn.proj.weight": rand(dim, dim),
                    p + "attn.proj.bias": rand(dim),
                    p + "norm2.weight": 1 + rand(dim),
                    p + "norm2.bias": rand(dim),
                    p + "mlp.fc1.weight": rand(hidden, dim),
                    p + "mlp.fc1.bias": rand(hidden),
                    p + "mlp.fc2.weight": rand(dim, hidden),
                    p + "mlp.fc2.bias": rand(dim),
                }
            )
            if layer_scale:
                sd.update({p + "gamma1": 1 + rand(dim), p + "gamma2": 1 + rand(dim)})
        if i < len(depths) - 1:
            p = f"levels.{i}.downsample."
            sd.update(
                {
                    p + "reduction.weight": rand(2 * dim, dim, 3, 3),
                    p + "norm.weight": 1 + rand(2 * dim),
                    p + "norm.bias": rand(2 * dim),
                }
            )
    dim = embed_dim * 2 ** (len(depths) - 1)
    sd.update(
        {
            "norm.weight": 1 + rand(dim),
            "norm.bias": rand(dim),
            "head.weight": rand(num_classes, dim),
            "head.bias": rand(num_classes),
        }
    )
    return sd


# Official name -> our name, applied in order (the official code downsamples at the end of a level).
OFFICIAL_TO_OURS = [
    (r"^levels\.(\d+)\.downsample\.", lambda m: f"stages.{int(m.group(1)) + 1}.downsample."),
    (r"^levels\.", "stages."),
    (r"\.gamma([12])$", r".ls\1.gamma"),
    (r"^head\.", "head.fc."),
]


def _transformers_layout(official: dict, prefix: str) -> dict:
    """The same weights under Hugging Face transformers' NatForImageClassification names."""
    out = {}
    for key, value in official.items():
        m = re.match(r"levels\.(\d+)\.blocks\.(\d+)\.(.*)", key)
        if m is None:
            key = key.replace("patch_embed.proj.", f"{prefix}.embeddings.patch_embeddings.projection.")
            key = key.replace("patch_embed.norm.", f"{prefix}.embeddings.norm.")
            key = re.sub(r"^levels\.", f"{prefix}.encoder.levels.", key)
            key = re.sub(r"^norm\.", f"{prefix}.layernorm.", key)
            out[key.replace("head.", "classifier.")] = value
            continue
        layer = f"{prefix}.encoder.levels.{m.group(1)}.layers.{m.group(2)}."
        name = m.group(3)
        if name.startswith("attn.qkv."):
            for part, chunk in zip(("query", "key", "value"), value.chunk(3)):
                out[layer + f"attention.self.{part}." + name.rsplit(".", 1)[1]] = chunk
        elif name == "gamma1":
            out[layer + "layer_scale_parameters"] = torch.stack([value, official[key[:-1] + "2"]])
        elif name != "gamma2":
            for ours, theirs in (
                ("norm1.", "layernorm_before."),
                ("norm2.", "layernorm_after."),
                ("attn.rpb", "attention.self.rpb"),
                ("attn.proj.", "attention.output.dense."),
                ("mlp.fc1.", "intermediate.dense."),
                ("mlp.fc2.", "output.dense."),
            ):
                name = name.replace(ours, theirs)
            out[layer + name] = value
    return out


@pytest.mark.parametrize("name, layer_scale", [("zoo_nat_small", 1e-5), ("zoo_dinat_mini", None)])
def test_official_checkpoint_loads(name, layer_scale, tmp_path):
    official = _official_state_dict(**SMALL, layer_scale=layer_scale)
    torch.save(official, tmp_path / "official.pth")  # the official files are bare state dicts
    model = checks.load_pretrained_file(name, tmp_path / "official.pth", **SMALL)

    direct = timm.create_model(name, **SMALL).eval()
    direct.load_state_dict(checks.rename_keys(official, OFFICIAL_TO_OURS), strict=True)
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        torch.testing.assert_close(model(x), direct(x), rtol=0, atol=0)


@pytest.mark.parametrize("name, prefix", [("zoo_nat_small", "nat"), ("zoo_dinat_small", "dinat")])
def test_transformers_checkpoint_loads(name, prefix, tmp_path):
    official = _official_state_dict(**SMALL, layer_scale=1e-5)
    torch.save(_transformers_layout(official, prefix), tmp_path / "pytorch_model.bin")
    model = checks.load_pretrained_file(name, tmp_path / "pytorch_model.bin", **SMALL, layer_scale=1e-5)
    direct = timm.create_model(name, **SMALL, layer_scale=1e-5).eval()
    direct.load_state_dict(checks.rename_keys(official, OFFICIAL_TO_OURS), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), direct(x), rtol=0, atol=0)


def test_checkpoint_of_other_architecture_is_refused(tmp_path):
    torch.save(_official_state_dict(**dict(SMALL, embed_dim=64), layer_scale=None), tmp_path / "other.pth")
    with pytest.raises(RuntimeError, match="size mismatch"):
        checks.load_pretrained_file("zoo_nat_mini", tmp_path / "other.pth", **SMALL)


def test_map_smaller_than_window_is_padded_like_natten():
    """A 5x4 map with a 7x7 window: NATTEN pads to 7x7 with zeros *before* the qkv projection, so
    every query attends to all 49 positions, padded ones included, with bias rpb[dy + 6, dx + 6]."""
    torch.manual_seed(0)
    attn = NeighborhoodAttention(dim=8, num_heads=2, kernel_size=7).eval()
    with torch.no_grad():
        attn.rpb.normal_()
        attn.qkv.bias.normal_()
    x = torch.randn(1, 5, 4, 8)
    padded = torch.zeros(1, 7, 7, 8)
    padded[:, :5, :4] = x
    q, k, v = attn.qkv(padded).reshape(49, 3, 2, 4).unbind(1)  # (tokens, heads, head_dim)
    ys, xs = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    bias = attn.rpb[:, ys[None, :] - ys[:, None] + 6, xs[None, :] - xs[:, None] + 6]  # (heads, q, k)
    logits = torch.einsum("qhd,khd->hqk", q, k) * 4**-0.5 + bias
    dense = torch.einsum("hqk,khd->qhd", logits.softmax(-1), v).reshape(1, 7, 7, 8)[:, :5, :4]
    with torch.no_grad():
        torch.testing.assert_close(attn(x), attn.proj(dense), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(OFFICIAL_DILATIONS))
def test_dilation_schedule_is_official(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    dilations = [[block.attn.dilation for block in stage.blocks] for stage in model.stages]
    assert dilations == OFFICIAL_DILATIONS[name]


test_full_size_parameter_counts_match_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


def test_any_input_size():
    model = timm.create_model("zoo_dinat_mini", **dict(SMALL, dilations=((8,), (1, 4), (2,), (1,)))).eval()
    checks.assert_maps_round_up(model, sizes=((33, 47), (7, 9), (1, 1)))
