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
    """The scaled_dot_product_attention path, which otherwise runs off the CPU only."""
    monkeypatch.setattr(mal, "runs_fused", lambda x: True)


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
