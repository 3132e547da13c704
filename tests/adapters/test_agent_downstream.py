"""Agent attention's downstream agent grids (``agent_shapes``): the official Agent-Swin and Agent-PVT detection and
segmentation backbones pool the queries to other grids than the classification models and resize the agent biases
along the agents to them."""

import pytest
import timm
import torch
import torch.nn.functional as F

from zoo.adapters._features import DenseBackbone
from zoo.layers.agent_attention import AgentAttention
from zoo.models import tiny_kwargs
from zoo.models.agent_pvt import ReducedAgentAttention

# model: the agent grid of each stage in the official detection and segmentation configs
OFFICIAL_GRIDS = {
    "zoo_agent_swin_tiny": [(9, 9), (12, 12), (14, 14), (7, 7)],
    "zoo_agent_pvt_tiny": [(12, 12), (16, 16), (28, 28), (28, 28)],
}


BIASES = ("an_bias", "na_bias", "ah_bias", "aw_bias", "ha_bias", "wa_bias")


def _agent_layers(model: torch.nn.Module) -> list[AgentAttention]:
    return [m for m in model.modules() if isinstance(m, AgentAttention)]


def _sharpen(model: torch.nn.Module) -> None:
    """Unit-scale agent biases and larger query/key projections: at their initial scale (0.02) every agent
    attends almost uniformly, so that the agents' grid hardly matters."""
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in _agent_layers(model):
            for name in BIASES:
                getattr(layer, name).normal_(0, 1)
            for name in ("qkv", "q", "kv"):
                if hasattr(layer, name):
                    getattr(layer, name).weight.normal_(0, 0.5)


def _stage_of(backbone: DenseBackbone, layer: AgentAttention) -> int:
    stages = backbone.stages
    return next(i for i, stage in enumerate(stages) if any(m is layer for m in stage.modules()))


@pytest.mark.parametrize("name", sorted(OFFICIAL_GRIDS))
def test_downstream_build_pools_queries_to_the_official_grids(name):
    backbone = DenseBackbone(name, **tiny_kwargs(name)).eval()
    pooled = {}
    for layer in _agent_layers(backbone):
        layer.pool.register_forward_hook(lambda m, i, out, layer=layer: pooled.__setitem__(layer, out.shape[-2:]))
    with torch.no_grad():
        backbone(torch.randn(1, 3, 96, 128))
    assert pooled and len(pooled) == len(_agent_layers(backbone))
    for layer, grid in pooled.items():
        assert tuple(grid) == OFFICIAL_GRIDS[name][_stage_of(backbone, layer)]


@pytest.mark.parametrize("name", sorted(OFFICIAL_GRIDS))
def test_classification_weights_load_into_the_downstream_build_and_change_its_output(name):
    kwargs = dict(tiny_kwargs(name), img_size=128)  # Swin's last map (4x4) holds a whole window, as downstream
    classifier = timm.create_model(name, **kwargs).eval()
    _sharpen(classifier)
    backbone = DenseBackbone(name, **kwargs).eval()
    default_grid = DenseBackbone(name, agent_shapes=None, **kwargs).eval()
    own = backbone.features.model.state_dict()
    weights = {k: v for k, v in classifier.state_dict().items() if k in own}
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in own.items()}
    backbone.features.model.load_state_dict(weights)
    default_grid.load_state_dict(backbone.state_dict())

    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ours, default = backbone(x), default_grid(x)
        # with its own grids the downstream build computes what the classifier does (the first stages, before
        # Swin's output norms and last-stage shift come in)
        torch.testing.assert_close(default_grid.features(x)[0], classifier.forward_intermediates(x)[1][0])
    for a, b in zip(ours, default):
        assert a.shape == b.shape
        assert (a - b).abs().max() > 1e-2


def _reference_agent_attention(attn: AgentAttention, x: torch.Tensor) -> torch.Tensor:
    """Agent attention as the official downstream code computes it: each bias interpolated to the map, then,
    viewed as a (rows, columns) grid of agents at every map position, interpolated to the pooling grid."""
    b, h, w, c = x.shape
    heads, head_dim = attn.num_heads, c // attn.num_heads
    side = int(attn.agent_num**0.5)
    q, k, v = attn.project(x)
    kv_h, kv_w = k.shape[1:3]
    grid = attn.agent_shape

    def to_grid(bias, size):  # (heads, agent_num, *size) -> (heads, agents, positions)
        positions = size[0] * size[1]
        bias = F.interpolate(bias, size=size, mode="bilinear").reshape(heads, side, side, positions)
        bias = F.interpolate(bias.permute(0, 3, 1, 2), size=grid, mode="bilinear")
        return bias.reshape(heads, positions, grid[0] * grid[1]).transpose(1, 2)

    to_keys = to_grid(attn.an_bias, (kv_h, kv_w)) + to_grid((attn.ah_bias + attn.aw_bias)[0], (kv_h, kv_w))
    to_agents = to_grid(attn.na_bias, (h, w)) + to_grid((attn.ha_bias + attn.wa_bias)[0].permute(0, 3, 1, 2), (h, w))

    agents = F.adaptive_avg_pool2d(q.permute(0, 3, 1, 2), grid).flatten(2).transpose(1, 2)
    q, k, v, agents = (t.reshape(b, -1, heads, head_dim).transpose(1, 2) for t in (q, k, v, agents))
    scale = head_dim**-0.5
    agent_values = ((agents * scale) @ k.transpose(-2, -1) + to_keys).softmax(-1) @ v
    out = ((q * scale) @ agents.transpose(-2, -1) + to_agents.transpose(1, 2)).softmax(-1) @ agent_values
    v_map = F.interpolate(v.transpose(1, 2).reshape(b, kv_h, kv_w, c).permute(0, 3, 1, 2), size=(h, w),
                          mode="bilinear")
    out = out.transpose(1, 2).reshape(b, h, w, c) + attn.dwc(v_map).permute(0, 2, 3, 1)
    return attn.proj(out)


@pytest.mark.parametrize(
    "layer, size",
    [
        (lambda: AgentAttention(16, 2, (6, 6), agent_num=4, agent_shape=(3, 5)), (5, 7)),  # more agents than stored
        (lambda: AgentAttention(16, 2, (6, 6), agent_num=16, agent_shape=(3, 2)), (6, 6)),  # fewer
        (lambda: AgentAttention(16, 2, (6, 6), agent_num=9, agent_shape=(6, 9)), (4, 5)),  # more agents than tokens
        (lambda: ReducedAgentAttention(16, 2, (8, 8), agent_num=4, agent_shape=(4, 3), sr_ratio=2), (8, 10)),
    ],
)
def test_agent_grid_resizes_the_biases_along_the_agents(layer, size):
    attn = layer().eval()
    _sharpen(attn)
    x = torch.randn(2, *size, 16)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _reference_agent_attention(attn, x), atol=1e-5, rtol=1e-5)


def test_default_grid_is_the_stored_one():
    attn = AgentAttention(16, 2, (6, 6), agent_num=9)
    same = AgentAttention(16, 2, (6, 6), agent_num=9, agent_shape=(3, 3))
    same.load_state_dict(attn.state_dict())
    x = torch.randn(1, 5, 7, 16)
    assert attn.agent_shape == (3, 3)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), same(x))


@pytest.mark.parametrize(
    "agent_shapes, message",
    [
        (((3, 3), (3, 3), (2, 2)), "one \\(rows, columns\\) grid per stage \\(4\\)"),
        (((3, 3), (3, 3), (2, 2), (0, 1)), "pair of positive ints"),
        (((3, 3), (3, 3), (2, 2), (2,)), "pair of positive ints"),
        (((3, 3), (3, 3), (2, 2), (2.0, 2)), "pair of positive ints"),
        ((9, 9, 9, 9), "pair of positive ints"),
        ("9x9", "one \\(rows, columns\\) grid per stage"),
    ],
)
@pytest.mark.parametrize("name", sorted(OFFICIAL_GRIDS))
def test_bad_agent_shapes_raise(name, agent_shapes, message):
    with pytest.raises(ValueError, match=message):
        timm.create_model(name, **tiny_kwargs(name), agent_shapes=agent_shapes)
