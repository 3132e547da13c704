"""The shared FLatten / Agent attention modules on a trunk that reduces keys and values (PVT's
spatial reduction), against the official PVT formulations written out plainly."""

import pytest
import torch
import torch.nn.functional as F

from zoo.layers.agent_attention import AgentAttention
from zoo.layers.flatten_attention import FocusedLinearAttention
from zoo.layers.map_attention import MapAttention, SpatialReduction

SIZE, SR = (6, 8), 2
KV_SIZE = (SIZE[0] // SR, SIZE[1] // SR)


class ReducedAgentAttention(SpatialReduction, AgentAttention):
    pass


class ReducedFocusedLinearAttention(SpatialReduction, FocusedLinearAttention):
    pass


def _qkv_tokens(attn, x):
    """Official PVT order: q from the tokens, k and v from the reduced tokens, ``(B, heads, N, d)`` each."""
    b, h, w, c = x.shape
    q = attn.q(x).reshape(b, h * w, c)
    reduced = attn.norm(attn.sr(x.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2))
    k, v = attn.kv(reduced).reshape(b, -1, 2, c).permute(2, 0, 1, 3)
    return q, k, v


def official_agent_pvt(attn, x):
    b, h, w, c = x.shape
    heads, d, n = attn.num_heads, c // attn.num_heads, h * w
    q, k, v = _qkv_tokens(attn, x)
    agents = attn.pool(q.reshape(b, h, w, c).permute(0, 3, 1, 2)).reshape(b, c, -1).permute(0, 2, 1)
    q, k, v, agents = (t.reshape(b, -1, heads, d).permute(0, 2, 1, 3) for t in (q, k, v, agents))
    bias1 = F.interpolate(attn.an_bias, size=KV_SIZE, mode="bilinear").reshape(1, heads, attn.agent_num, -1)
    bias1 = bias1 + (attn.ah_bias + attn.aw_bias).reshape(1, heads, attn.agent_num, -1)
    agent_v = torch.softmax(agents * d**-0.5 @ k.transpose(-2, -1) + bias1, dim=-1) @ v
    bias2 = F.interpolate(attn.na_bias, size=SIZE, mode="bilinear").reshape(1, heads, attn.agent_num, -1)
    bias2 = bias2.permute(0, 1, 3, 2) + (attn.ha_bias + attn.wa_bias).reshape(1, heads, -1, attn.agent_num)
    out = (torch.softmax(q * d**-0.5 @ agents.transpose(-2, -1) + bias2, dim=-1) @ agent_v).transpose(1, 2)
    v_map = v.transpose(1, 2).reshape(b, *KV_SIZE, c).permute(0, 3, 1, 2)
    v_map = F.interpolate(v_map, size=SIZE, mode="bilinear")
    out = out.reshape(b, n, c) + attn.dwc(v_map).permute(0, 2, 3, 1).reshape(b, n, c)
    return attn.proj(out).reshape(b, h, w, c)


def official_flatten_pvt(attn, x):
    b, h, w, c = x.shape
    heads, n = attn.num_heads, h * w
    q, k, v = _qkv_tokens(attn, x)
    m = k.shape[1]
    k = k + attn.positional_encoding
    scale = F.softplus(attn.scale)
    q, k = (F.relu(t) + 1e-6 for t in (q, k))
    q, k = q / scale, k / scale
    q_norm, k_norm = q.norm(dim=-1, keepdim=True), k.norm(dim=-1, keepdim=True)
    q, k = q**3, k**3
    q, k = q / q.norm(dim=-1, keepdim=True) * q_norm, k / k.norm(dim=-1, keepdim=True) * k_norm
    q = q.reshape(b, n, heads, -1).permute(0, 2, 1, 3)
    k, v = (t.reshape(b, m, heads, -1).permute(0, 2, 1, 3) for t in (k, v))
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    out = (q @ ((k.transpose(-2, -1) * m**-0.5) @ (v * m**-0.5)) * z).transpose(1, 2).reshape(b, n, c)
    v = F.interpolate(v.transpose(-2, -1).reshape(b * heads, -1, m), size=n, mode="linear")
    v = v.reshape(b, heads, -1, n).transpose(-2, -1).reshape(b * heads, h, w, -1).permute(0, 3, 1, 2)
    out = out + attn.dwc(v).reshape(b, c, n).permute(0, 2, 1)
    return attn.proj(out).reshape(b, h, w, c)


@pytest.mark.parametrize(
    "build, official",
    [
        (lambda: ReducedAgentAttention(32, 2, SIZE, agent_num=4, sr_ratio=SR), official_agent_pvt),
        (lambda: ReducedFocusedLinearAttention(32, 2, SIZE, sr_ratio=SR), official_flatten_pvt),
    ],
    ids=["agent", "flatten"],
)
def test_reduced_keys_and_values_match_the_official_pvt_formulation(build, official):
    attn = build().eval()
    assert not hasattr(attn, "qkv")
    with torch.no_grad():
        for param in attn.parameters():
            param.add_(0.1 * torch.randn_like(param))
        x = torch.randn(2, *SIZE, 32)
        torch.testing.assert_close(attn(x), official(attn, x), rtol=1e-5, atol=1e-5)


def test_mix_must_be_defined_and_heads_must_divide_dim():
    with pytest.raises(NotImplementedError):
        MapAttention(8, 2)(torch.randn(1, 2, 2, 8))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        AgentAttention(10, 3, (4, 4), agent_num=4)
