"""The network: published key set, shapes, the training forward and the marked quirks."""
from __future__ import annotations

import json

import pytest
import torch
from einops import rearrange

from PromptIQA.models import MAL, AttentionBlock, ModelConfig, PromptIQA
from PromptIQA.models.promptiqa import quality_cnn
from tools.make_parity_checkpoint import OFFICIAL_KEYS

BACKBONES = ["vit_tiny_patch16_224", "resnet18"]


@pytest.fixture(scope="module", params=BACKBONES)
def model(request) -> PromptIQA:
    torch.manual_seed(0)
    return PromptIQA(ModelConfig(backbone=request.param)).eval()


def test_default_network_has_published_keys_in_order():
    with torch.device("meta"):
        model = PromptIQA()
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    assert ours == json.loads(OFFICIAL_KEYS.read_text())
    assert sum(p.numel() for p in model.parameters()) == 318_159_200


def test_default_head_is_the_published_one():
    with torch.device("meta"):
        model = PromptIQA()
    assert model.layout.grid == 28 and model.layout.dim == 768 and model.layout.num_heads == 12
    assert model.feature_indices == [2, 5, 8, 11]
    assert [b.norm1.eps for b in model.blocks] == [1e-6] * 8
    assert [b.norm1.eps for b in model.i_p_fusion] + [model.block.norm1.eps, model.norm.eps] == [1e-5] * 5
    assert model.blocks[0].attn.qkv.bias is not None and model.prompt_fusion[0].attn.qkv.bias is None
    pools = [m.kernel_size for m in model.cnn if isinstance(m, torch.nn.AvgPool2d)]
    assert pools == [2, 2, 3] and all(m.padding == (0, 0) for m in model.cnn if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("grid", [28, 14, 7])
def test_quality_cnn_reduces_any_grid_to_one_vector(grid):
    assert quality_cnn(16, grid)(torch.randn(2, 16, grid, grid)).shape == (2, 128, 1, 1)


@pytest.mark.parametrize("batch", [2, 3])
def test_training_forward_shapes(model, batch):
    out = model(torch.randn(batch, 3, 224, 224), torch.rand(batch))
    assert out.shape == (batch,) and ((out >= 0) & (out <= 1)).all()


@pytest.mark.parametrize("n", [1, 4])
def test_inference_shapes(model, n):
    with torch.no_grad():
        prompts = model.encode_prompts(torch.randn(n, 3, 224, 224), torch.rand(n))
        scores = model.score_images(torch.randn(3, 3, 224, 224), prompts)
    assert prompts.shape == (n, 128) and scores.shape == (3,)


def test_training_forward_equals_scoring_each_image_against_the_others(model):
    images, labels = torch.randn(4, 3, 224, 224), torch.tensor([0.1, 0.7, 0.4, 0.9])
    with torch.no_grad():
        batched = model(images, labels)
        single = [
            model.score_images(images[i : i + 1], model.encode_prompts(images[others], labels[others]))
            for i in range(4)
            for others in [[j for j in range(4) if j != i]]
        ]
    torch.testing.assert_close(batched, torch.cat(single), rtol=0, atol=1e-5)


def test_prediction_depends_on_prompt_scores(model):
    images = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        low = model.score_images(images[:1], model.encode_prompts(images[1:], torch.tensor([0.0, 0.1])))
        high = model.score_images(images[:1], model.encode_prompts(images[1:], torch.tensor([0.9, 1.0])))
    assert not torch.allclose(low, high)


def published_attention_block(block: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """The published formula, written independently (docs/model.md 2.3, 2.6, eval mode)."""
    b, r, d = x.shape
    attn = torch.softmax(block.c_q(x) @ block.c_k(x).transpose(-1, -2) * d**-0.5, dim=-1)
    return (attn @ block.c_v(x)).permute(0, 2, 1).contiguous().view(b, r, d) + x


def test_attention_block_rereads_transposed_memory():
    block = AttentionBlock(6).eval()
    x = torch.randn(2, 5, 6)
    torch.testing.assert_close(block(x), published_attention_block(block, x))
    transposed_back = block.c_v(x)  # a plain transpose back would differ: the quirk matters
    assert not torch.allclose(block(x) - x, transposed_back)


def test_mal_regroups_channels_as_published():
    torch.manual_seed(0)
    mal = MAL(in_dim=8, feature_num=3, feature_size=4).eval()
    for att in mal.attention_module:
        att.gamma.data.fill_(0.5)
    maps = [torch.randn(2, 8, 4, 4) for _ in range(3)]
    stacked = torch.stack([att(m) for att, m in zip(mal.attention_module, maps)])
    x = rearrange(stacked, "n b c w h -> b (n c) (w h)")
    by_feature = published_attention_block(mal.feature_attention, rearrange(x, "b (w c) h -> b w (c h)", w=8, c=3))
    by_channel = published_attention_block(mal.channel_attention, x.permute(0, 2, 1))
    fused = (rearrange(by_feature, "b w (c h) -> b (w c) h", w=8, c=3) + by_channel.permute(0, 2, 1)) / 2
    expected = fused.view(2, 3, 8, -1).mean(dim=1)
    torch.testing.assert_close(mal(maps), expected)
