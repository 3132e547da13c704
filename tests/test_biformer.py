"""BiFormer: official checkpoint layouts, BRA semantics with padding, sizes (autocast: test_autocast.py)."""

import _family_checks as checks
import pytest
import timm
import torch
import torch.nn.functional as F

import zoo  # noqa: F401
from zoo.models.biformer import AttentionLePE, BiLevelRoutingAttention

# Parameter counts of the official models (rayleizhu/BiFormer models/biformer.py, biformer_stl.py), instantiated.
OFFICIAL_PARAMS = {
    "zoo_biformer_tiny": 13_142_760,
    "zoo_biformer_small": 25_536_232,
    "zoo_biformer_base": 56_804_968,
    "zoo_biformer_stl": 28_372_552,
}
SMALL = dict(embed_dims=(32, 64, 64, 64), depths=(1, 2, 1, 1), head_dim=16, n_win=2, topks=(1, 2, 3, -2))


def _official_state_dict(embed_dims, depths, topks, mlp_ratio, swin_layout, num_classes=1000, **_):
    """Random weights under the official key names and shapes (``BiFormer`` / ``BiFormerSTL``)."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    def conv(prefix, cin, cout, k, groups=1):
        return {prefix + "weight": rand(cout, cin // groups, k, k), prefix + "bias": rand(cout)}

    def norm(prefix, dim, batch=False):
        sd = {prefix + "weight": 1 + rand(dim), prefix + "bias": rand(dim)}
        if batch:
            sd.update(
                {
                    prefix + "running_mean": rand(dim),
                    prefix + "running_var": 1 + rand(dim).abs(),
                    prefix + "num_batches_tracked": torch.tensor(7),
                }
            )
        return sd

    def linear(prefix, cin, cout, bias=True):
        return {prefix + "weight": rand(cout, cin), **({prefix + "bias": rand(cout)} if bias else {})}

    c0 = embed_dims[0]
    if swin_layout:
        sd = {**conv("downsample_layers.0.0.", 3, c0, 4), **norm("downsample_layers.0.1.", c0, batch=True)}
    else:
        sd = {
            **conv("downsample_layers.0.0.", 3, c0 // 2, 3),
            **norm("downsample_layers.0.1.", c0 // 2, batch=True),
            **conv("downsample_layers.0.3.", c0 // 2, c0, 3),
            **norm("downsample_layers.0.4.", c0, batch=True),
        }
    for i in range(1, len(embed_dims)):
        cin, cout = embed_dims[i - 1], embed_dims[i]
        if swin_layout:
            sd.update(
                {
                    **norm(f"downsample_layers.{i}.0.", cin, batch=True),
                    **conv(f"downsample_layers.{i}.1.", cin, cout, 2),
                }
            )
        else:
            sd.update(
                {
                    **conv(f"downsample_layers.{i}.0.", cin, cout, 3),
                    **norm(f"downsample_layers.{i}.1.", cout, batch=True),
                }
            )
    for i, (dim, depth, topk) in enumerate(zip(embed_dims, depths, topks)):
        hidden = int(dim * mlp_ratio)
        for j in range(depth):
            p = f"stages.{i}.blocks.{j}." if swin_layout else f"stages.{i}.{j}."
            if not swin_layout:
                sd.update(conv(p + "pos_embed.", dim, dim, 3, groups=dim))
            sd.update(
                {
                    **norm(p + "norm1.", dim),
                    **norm(p + "norm2.", dim),
                    **conv(p + "attn.lepe.", dim, dim, 5, groups=dim),
                }
            )
            if topk > 0:
                sd.update({**linear(p + "attn.qkv.qkv.", dim, 3 * dim), **linear(p + "attn.wo.", dim, dim)})
            else:
                sd.update({**linear(p + "attn.qkv.", dim, 3 * dim, bias=False), **linear(p + "attn.proj.", dim, dim)})
            fc2 = "mlp.2." if swin_layout else "mlp.3."  # BiFormer's MLP has an Identity at index 1
            sd.update({**linear(p + "mlp.0.", dim, hidden), **linear(p + fc2, hidden, dim)})
    sd.update({**norm("norm.", embed_dims[-1], batch=True), **linear("head.", embed_dims[-1], num_classes)})
    return sd


# Official name -> our name, applied in order.
OFFICIAL_TO_OURS = [
    (r"^downsample_layers\.0\.", "stem."),
    (r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample."),
    (r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"attn\.qkv\.qkv\.", "attn.qkv."),
    (r"attn\.wo\.", "attn.proj."),
    (r"mlp\.0\.", "mlp.fc1."),
    (r"mlp\.[23]\.", "mlp.fc2."),
    (r"^head\.", "head.fc."),
]


@pytest.mark.parametrize(
    "name, mlp_ratio, swin_layout", [("zoo_biformer_tiny", 3.0, False), ("zoo_biformer_stl", 4.0, True)]
)
def test_official_checkpoint_loads(name, mlp_ratio, swin_layout, tmp_path):
    official = _official_state_dict(**SMALL, mlp_ratio=mlp_ratio, swin_layout=swin_layout)
    torch.save({"model": official, "epoch": 299}, tmp_path / "official.pth")
    model = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "official.pth")), **SMALL
    ).eval()
    direct = timm.create_model(name, **SMALL).eval()
    direct.load_state_dict(checks.rename_keys(official, OFFICIAL_TO_OURS), strict=True)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), direct(x), rtol=0, atol=0)


def test_checkpoint_of_other_architecture_is_refused(tmp_path):
    other = _official_state_dict(**dict(SMALL, embed_dims=(32, 64, 128, 128)), mlp_ratio=3.0, swin_layout=False)
    torch.save({"model": other}, tmp_path / "other.pth")
    with pytest.raises(RuntimeError, match="size mismatch"):
        timm.create_model(
            "zoo_biformer_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "other.pth")), **SMALL
        )


def _dense_bra(attn: BiLevelRoutingAttention, x: torch.Tensor) -> torch.Tensor:
    """BRA written densely: zero-pad the input to a multiple of n_win (before qkv, as the official
    ``auto_pad``), route regions by mean q/k affinity, mask every key outside the routed regions."""
    n, (b, h, w, c) = attn.n_win, x.shape
    x = F.pad(x, (0, 0, 0, -w % n, 0, -h % n))
    hp, wp = x.shape[1:3]
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    region = ((torch.arange(hp) // (hp // n))[:, None] * n + torch.arange(wp) // (wp // n)).flatten()
    onehot = F.one_hot(region, n * n).float()  # (tokens, regions)
    q_r = onehot.T @ q.reshape(b, -1, c) / onehot.sum(0)[:, None]
    k_r = onehot.T @ k.reshape(b, -1, c) / onehot.sum(0)[:, None]
    routes = (q_r @ k_r.transpose(1, 2)).topk(attn.topk, dim=-1).indices  # (B, regions, topk)
    allowed = torch.zeros(b, n * n, n * n, dtype=torch.bool).scatter_(2, routes, True)
    mask = allowed[:, region][:, :, region]  # (B, q tokens, k tokens)
    heads = [t.reshape(b, -1, attn.num_heads, attn.head_dim).transpose(1, 2) for t in (q, k, v)]
    out = F.scaled_dot_product_attention(*heads, attn_mask=mask[:, None], scale=c**-0.5)
    out = out.transpose(1, 2).reshape(b, hp, wp, c) + attn.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return attn.proj(out)[:, :h, :w]


@pytest.mark.parametrize("size", [(8, 8), (7, 10), (3, 2)])
def test_routing_attention_matches_dense_reference(size):
    torch.manual_seed(0)
    attn = BiLevelRoutingAttention(dim=32, num_heads=2, n_win=4, topk=3).eval()
    with torch.no_grad():
        attn.qkv.bias.normal_()
        x = torch.randn(2, *size, 32)
        torch.testing.assert_close(attn(x), _dense_bra(attn, x), rtol=1e-5, atol=1e-5)


def test_global_attention_adds_lepe_of_its_input():
    """The last stage's attention (official ``AttentionLePE``): the depthwise conv sees the block's
    normalized input, not V."""
    torch.manual_seed(0)
    attn = AttentionLePE(dim=16, num_heads=8).eval()
    x = torch.randn(1, 3, 5, 16)
    q, k, v = attn.qkv(x.reshape(1, 15, 16)).reshape(15, 3, 8, 2).permute(1, 2, 0, 3)
    out = ((q @ k.transpose(-1, -2)) * 2**-0.5).softmax(-1) @ v  # (heads, tokens, head_dim)
    out = out.transpose(0, 1).reshape(1, 3, 5, 16) + attn.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), attn.proj(out), rtol=1e-5, atol=1e-5)


test_full_size_parameter_counts_match_official = checks.official_parameter_count_test(OFFICIAL_PARAMS)


def test_any_input_size():
    model = timm.create_model("zoo_biformer_tiny", **SMALL).eval()
    checks.assert_maps_round_up(model, sizes=((33, 47), (7, 9), (1, 1)))
    stl = timm.create_model("zoo_biformer_stl", **SMALL).eval()
    with torch.no_grad():
        assert stl(torch.randn(1, 3, 45, 70)).shape == (1, 1000)
    with pytest.raises(ValueError, match="at least 32x32"):
        stl(torch.randn(1, 3, 31, 64))
