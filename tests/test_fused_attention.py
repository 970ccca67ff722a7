"""The MAL's attention through scaled_dot_product_attention equals the published formulation.

The references are written out here as in the published code: softmax of the (B, N, N) energies,
then a product with the values.
"""
from __future__ import annotations

import pytest
import torch

from PromptIQA.models import mal
from PromptIQA.models.mal import MAL, AttentionBlock, SpatialSelfAttention
from PromptIQA.utils.device import precision_scope


def reference_spatial(module: SpatialSelfAttention, x: torch.Tensor) -> torch.Tensor:
    q = module.qConv(x).flatten(2).transpose(1, 2)
    k = module.kConv(x).flatten(2)
    v = module.vConv(x).flatten(2)
    attn = torch.softmax(torch.bmm(q, k), dim=-1)
    return module.gamma * torch.bmm(v, attn.transpose(1, 2)).view_as(x) + x


def reference_rows(module: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    q, k, v = module.c_q(x), module.c_k(x), module.c_v(x)
    attn = torch.softmax(q @ k.transpose(-2, -1) * x.shape[-1] ** -0.5, dim=-1)
    return (attn @ v).transpose(1, 2).reshape(x.shape) + x


def reference_mal(module: MAL, maps: list[torch.Tensor]) -> torch.Tensor:
    x = torch.stack([reference_spatial(att, m) for att, m in zip(module.attention_module, maps)], dim=1)
    b, f, d = x.shape[:3]
    x = x.reshape(b, f * d, -1)
    n = x.shape[-1]
    by_feature = reference_rows(module.feature_attention, x.reshape(b, d, f * n)).reshape(b, f * d, n)
    by_channel = reference_rows(module.channel_attention, x.transpose(1, 2)).transpose(1, 2)
    return ((by_feature + by_channel) / 2).view(b, f, d, n).mean(dim=1)


@pytest.fixture
def fused_everywhere(monkeypatch):
    """The scaled_dot_product_attention path for the attentions SDPA_OFF_CPU names, as off the CPU."""
    monkeypatch.setattr(mal, "uses_sdpa", lambda x, attention: mal.SDPA_OFF_CPU[attention])


@pytest.fixture
def sdpa_calls(monkeypatch) -> list[torch.Tensor]:
    """The (q, k, v) of every scaled_dot_product_attention call, which still runs."""
    calls = []
    real = mal.F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        calls.append((q, k, v))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(mal.F, "scaled_dot_product_attention", recording)
    return calls


def spatial_module(dim: int, seed: int) -> SpatialSelfAttention:
    torch.manual_seed(seed)
    module = SpatialSelfAttention(dim)
    module.gamma.data.fill_(0.8)  # 0 at initialisation would hide the attention entirely
    return module


@torch.no_grad()
def test_fused_spatial_attention_equals_the_published_formula(fused_everywhere):
    module = spatial_module(64, seed=1)
    x = torch.randn(3, 64, 7, 7) * 2
    torch.testing.assert_close(module(x), reference_spatial(module, x), rtol=0, atol=1e-5)


@torch.no_grad()
def test_fused_row_attention_equals_the_published_formula(fused_everywhere):
    torch.manual_seed(2)
    module = AttentionBlock(96).eval()
    x = torch.randn(2, 40, 96)
    torch.testing.assert_close(module(x), reference_rows(module, x), rtol=0, atol=1e-5)


@torch.no_grad()
def test_fused_mal_equals_the_published_formula(fused_everywhere):
    torch.manual_seed(3)
    module = MAL(in_dim=32, feature_num=4, feature_size=5).eval()
    for att in module.attention_module:
        att.gamma.data.fill_(0.5)
    maps = [torch.randn(2, 32, 5, 5) for _ in range(4)]
    out = module(maps)
    assert out.shape == (2, 32, 25)
    torch.testing.assert_close(out, reference_mal(module, maps), rtol=0, atol=1e-5)


def test_fused_attention_gradients_equal_the_published_formula(fused_everywhere):
    module = spatial_module(32, seed=4)
    x = torch.randn(2, 32, 6, 6, requires_grad=True)
    module(x).square().sum().backward()
    fused = x.grad.clone(), module.qConv.weight.grad.clone()
    x.grad = None
    module.zero_grad()
    reference_spatial(module, x).square().sum().backward()
    torch.testing.assert_close(fused[0], x.grad, rtol=0, atol=1e-5)
    torch.testing.assert_close(fused[1], module.qConv.weight.grad, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_cpu_keeps_the_published_arithmetic_bit_for_bit():
    """On the CPU the plain formula runs, so fp32 numbers are exactly those of the published code."""
    module = spatial_module(48, seed=5)
    x = torch.randn(2, 48, 6, 6)
    assert torch.equal(module(x), reference_spatial(module, x))
    rows = AttentionBlock(36).eval()
    y = torch.randn(2, 48, 36)
    assert torch.equal(rows(y), reference_rows(rows, y))


def test_sdpa_gets_contiguous_last_dimensions(fused_everywhere, sdpa_calls):
    """Fused kernels need a contiguous last dimension; strided views leave SDPA only its math fallback."""
    module = MAL(in_dim=32, feature_num=4, feature_size=5).eval()
    maps = [torch.randn(2, 32, 5, 5, requires_grad=True) for _ in range(4)]
    module(maps).sum().backward()
    assert len(sdpa_calls) == 6  # four spatial attentions, then the feature and channel rows
    for q, k, v in sdpa_calls:
        assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1, (q.stride(), k.stride(), v.stride())


@pytest.mark.parametrize("attention, calls", [("spatial", 2), ("channel", 5), ("feature", 5)])
def test_each_attention_can_keep_the_explicit_formula(fused_everywhere, sdpa_calls, monkeypatch, attention, calls):
    monkeypatch.setitem(mal.SDPA_OFF_CPU, attention, False)
    torch.manual_seed(7)
    module = MAL(in_dim=16, feature_num=4, feature_size=4).eval()
    for att in module.attention_module:
        att.gamma.data.fill_(0.5)
    maps = [torch.randn(2, 16, 4, 4) for _ in range(4)]
    with torch.no_grad():
        out = module(maps)
    assert len(sdpa_calls) == calls
    torch.testing.assert_close(out, reference_mal(module, maps), rtol=0, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@torch.no_grad()
def test_cuda_mal_matches_the_cpu_reference():
    torch.manual_seed(6)
    module = MAL(in_dim=64, feature_num=3, feature_size=8).eval()
    for att in module.attention_module:
        att.gamma.data.fill_(0.5)
    maps = [torch.randn(2, 64, 8, 8) for _ in range(3)]
    expected = reference_mal(module, maps)
    device = torch.device("cuda")
    with precision_scope(device, "fp32"):  # no TF32 in cuDNN's 1x1 convolutions either
        out = module.to(device)([m.to(device) for m in maps]).cpu()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)
