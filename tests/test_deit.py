"""Agent-DeiT: the class-token agent attention against the official formulation written out plainly,
the official checkpoint layout, other input sizes, parameter counts."""

import _family_checks as checks
import pytest
import torch
import torch.nn.functional as F

import zoo  # noqa: F401
from zoo.models._registry import tiny_kwargs
from zoo.models.agent_deit import ClassTokenAgentAttention

# Parameter counts of the official models, measured by building LeapLabTHU's agent_deit VisionTransformer
# with the official configs (T/S: 49 agents in all blocks; B: 81 agents, agent_layer=4; S at 448).
OFFICIAL_PARAMS = {
    "zoo_agent_deit_tiny": 6_015_640,
    "zoo_agent_deit_small": 22_647_112,
    "zoo_agent_deit_small_448": 23_070_472,
    "zoo_agent_deit_base": 87_204_904,
}

NAME = "zoo_agent_deit_tiny"


def official_agent_deit_attention(attn, x, window):
    """Official ``agent_deit.py`` AgentAttention on ``(B, 1 + window**2, C)`` tokens."""
    b, n, c = x.shape
    heads, d = attn.num_heads, c // attn.num_heads
    q, k, v = attn.qkv(x).reshape(b, n, 3, c).permute(2, 0, 1, 3)
    agents = attn.pool(q[:, 1:].reshape(b, window, window, c).permute(0, 3, 1, 2)).reshape(b, c, -1).permute(0, 2, 1)
    q, k, v, agents = (t.reshape(b, -1, heads, d).permute(0, 2, 1, 3) for t in (q, k, v, agents))
    bias1 = F.interpolate(attn.an_bias, size=(window, window), mode="bilinear").reshape(1, heads, attn.agent_num, -1)
    bias1 = bias1 + (attn.ah_bias + attn.aw_bias).reshape(1, heads, attn.agent_num, -1)
    bias1 = torch.cat([attn.ac_bias, bias1], dim=-1)
    agent_v = torch.softmax(agents * d**-0.5 @ k.transpose(-2, -1) + bias1, dim=-1) @ v
    bias2 = F.interpolate(attn.na_bias, size=(window, window), mode="bilinear").reshape(1, heads, attn.agent_num, -1)
    bias2 = bias2.permute(0, 1, 3, 2) + (attn.ha_bias + attn.wa_bias).reshape(1, heads, -1, attn.agent_num)
    bias2 = torch.cat([attn.ca_bias, bias2], dim=-2)
    out = (torch.softmax(q * d**-0.5 @ agents.transpose(-2, -1) + bias2, dim=-1) @ agent_v).transpose(1, 2)
    out = out.reshape(b, n, c).clone()
    v_map = v[:, :, 1:].transpose(1, 2).reshape(b, window, window, c).permute(0, 3, 1, 2)
    out[:, 1:] = out[:, 1:] + attn.dwc(v_map).permute(0, 2, 3, 1).reshape(b, n - 1, c)
    return attn.proj(out)


test_parameter_count_matches_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


def test_class_token_agent_attention_matches_official():
    attn = ClassTokenAgentAttention(32, 2, (6, 6), agent_num=4).eval()
    with torch.no_grad():
        for param in attn.parameters():
            param.add_(0.1 * torch.randn_like(param))
        x = torch.randn(2, 1 + 36, 32)
        torch.testing.assert_close(attn(x, (6, 6)), official_agent_deit_attention(attn, x, 6), rtol=1e-5, atol=1e-5)


def _official_layout(state_dict: dict) -> dict:
    """Our keys are the official ones but for the classifier's: a bare ``head`` linear."""
    return checks.rename_keys(state_dict, checks.TO_BARE_LINEAR_HEAD)


def test_official_checkpoint_loads(tmp_path):
    kwargs = dict(tiny_kwargs(NAME), agent_blocks=1)  # one agent block, then softmax attention (as DeiT-B)
    expected = {"patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.0.attn.ac_bias",
                "blocks.0.attn.dwc.weight", "blocks.1.attn.qkv.weight", "norm.weight", "head.weight"}
    x = torch.randn(2, 3, 32, 32)
    source, _ = checks.check_official_checkpoint(NAME, _official_layout, tmp_path, x, expected, **kwargs)
    assert not hasattr(source.blocks[1].attn, "an_bias")


def test_class_token_rides_on_top_of_the_patch_map():
    model = checks.random_model(NAME, **tiny_kwargs(NAME)).eval()
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        features = model.forward_features(x)
        maps = model.forward_intermediates(x, intermediates_only=True, output_fmt="NHWC")
        logits = model(x)
    assert features.shape == (2, 1 + 5, 7, 16)
    assert torch.equal(features[:, 0], features[:, 0, :1].expand(-1, 7, -1))  # the class token, repeated
    assert [m.shape for m in maps] == [(2, 5, 7, 16)] * 2
    torch.testing.assert_close(logits, model.head.fc(features[:, 0, 0]))
    model.reset_classifier(3, "avg")
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.head.fc(model.forward_features(x)[:, 1:].mean(dim=(1, 2))))
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, "max")


def test_checkpoint_resized_for_another_resolution(tmp_path):
    model = checks.load_at_another_size(NAME, _official_layout, tmp_path, 48, **tiny_kwargs(NAME))
    assert model.pos_embed.shape == (1, 1 + 36, 16) and model.blocks[0].attn.ah_bias.shape[3] == 6

