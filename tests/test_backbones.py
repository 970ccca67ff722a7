"""Backbone families other than the published one: every parameter trains, checkpoints round-trip
through the meta-device loader, DDP trains them without unused parameters, and a backbone that
cannot work is refused with a clear message."""
from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from torch.nn.parallel import DistributedDataParallel
from training_fixtures import free_port

from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.checkpoint import load_model, save_checkpoint
from PromptIQA.utils.errors import UserError

# One small model per family, at an image size its stride divides.
FAMILIES = {
    "plain ViT": ModelConfig("vit_tiny_patch16_224", 64, prompt_num=2),
    "relative-position ViT (fc_norm)": ModelConfig("test_vit_relpos", 64, prompt_num=2),
    "rotary-embedding ViT (EVA-02)": ModelConfig("eva02_tiny_patch14_224", 56, prompt_num=2),
    "ViT with attention-pool head": ModelConfig("test_vit3", 64, prompt_num=2),
    "CNN": ModelConfig("resnet10t", 64, prompt_num=2, cnn_dim=128),  # narrower than the default 384, as in --demo
}
BATCH = 3


@register_model
def rectangular_patch_vit(pretrained: bool = False, img_size: int = 224, num_classes: int = 0, **_) -> VisionTransformer:
    """A ViT whose 16x8 patches give a non-square token grid from a square image."""
    return VisionTransformer(img_size, patch_size=(16, 8), num_classes=num_classes, embed_dim=64, depth=4, num_heads=2)


def family_params():
    return [pytest.param(config, id=name) for name, config in FAMILIES.items()]


def batch(config: ModelConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(BATCH, 3, config.img_size, config.img_size, generator=generator)
    return images, torch.rand(BATCH, generator=generator)


@pytest.mark.parametrize("config", family_params())
def test_every_parameter_receives_a_gradient(config):
    torch.manual_seed(0)
    model = PromptIQA(config).train()
    images, scores = batch(config)
    torch.nn.functional.l1_loss(model(images, scores), scores).backward()
    without = [name for name, p in model.named_parameters() if p.grad is None]
    not_finite = [name for name, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
    assert without == [] and not_finite == []


@pytest.mark.parametrize("config", family_params())
def test_checkpoint_round_trip_gives_the_same_scores(config, tmp_path):
    torch.manual_seed(0)
    model = PromptIQA(config).eval()
    path = tmp_path / "model.pth.tar"
    save_checkpoint({"model": model.state_dict(), "model_config": config.to_dict()}, path)
    loaded = load_model(path)
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    images, scores = batch(config)
    with torch.no_grad():
        before = model.score_images(images[:1], model.encode_prompts(images[1:], scores[1:]))
        after = loaded.score_images(images[:1], loaded.encode_prompts(images[1:], scores[1:]))
    assert torch.equal(before, after)


def test_cnn_dim_sets_a_cnn_heads_width_and_leaves_vits_alone(tmp_path):
    cnn = PromptIQA(ModelConfig("resnet10t", 64, cnn_dim=128))
    assert (cnn.layout.dim, cnn.layout.num_heads) == (128, 2)
    assert all(proj.out_channels == 128 for proj in cnn.cnn_backbone.proj)
    assert PromptIQA(ModelConfig("resnet10t", 64)).layout.dim == 384
    assert PromptIQA(ModelConfig("vit_tiny_patch16_224", 64, cnn_dim=128)).layout.dim == 192
    # Checkpoints written before cnn_dim existed were all at the default width.
    saved = ModelConfig("resnet10t", 64).to_dict()
    del saved["cnn_dim"]
    assert ModelConfig.from_dict(saved).cnn_dim == 384


def test_pruned_heads_are_not_parameters():
    pooled = PromptIQA(FAMILIES["ViT with attention-pool head"])
    relpos = PromptIQA(FAMILIES["relative-position ViT (fc_norm)"])
    assert pooled.vit.attn_pool is None and "vit.attn_pool.q.weight" in pooled.pruned_keys
    assert not any(k.startswith("vit.fc_norm.") for k in relpos.state_dict())
    assert {"vit.fc_norm.weight", "vit.fc_norm.bias"} <= relpos.pruned_keys


def test_checkpoint_with_weights_of_pruned_modules_still_loads(tmp_path):
    """Checkpoints written while the unused norm was still a parameter load; its weights are dropped."""
    config = FAMILIES["relative-position ViT (fc_norm)"]
    model = PromptIQA(config).eval()
    dim = model.layout.dim
    state = {**model.state_dict(), "vit.fc_norm.weight": torch.ones(dim), "vit.fc_norm.bias": torch.zeros(dim)}
    path = tmp_path / "older.pth.tar"
    save_checkpoint({"model": state, "model_config": config.to_dict()}, path)
    assert "vit.fc_norm.weight" not in load_model(path).state_dict()


def _train_two_ddp_steps(rank: int, port: int, config: dict, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        config = ModelConfig.from_dict(config)
        torch.manual_seed(0)
        model = DistributedDataParallel(PromptIQA(config).train(), find_unused_parameters=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        # Two steps: DDP reports parameters that got no gradient when the next step starts.
        for step in range(2):
            images, scores = batch(config, seed=10 * rank + step)
            optimizer.zero_grad()
            torch.nn.functional.l1_loss(model(images, scores), scores).backward()
            optimizer.step()
        weights = torch.cat([p.detach().flatten() for p in model.module.parameters()])
        gathered = [torch.empty_like(weights) for _ in range(2)]
        dist.all_gather(gathered, weights)
        if rank == 0:
            with open(out, "w") as f:
                json.dump({"ranks_equal": torch.equal(*gathered), "sum": weights.double().sum().item()}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("config", family_params())
def test_two_gloo_processes_train_a_step(config, tmp_path):
    out = tmp_path / "rank0.json"
    mp.spawn(_train_two_ddp_steps, args=(free_port(), config.to_dict(), str(out)), nprocs=2)
    result = json.loads(out.read_text())
    torch.manual_seed(0)
    untrained = sum(p.detach().double().sum().item() for p in PromptIQA(config).parameters())
    assert result["ranks_equal"] and result["sum"] != untrained


@pytest.mark.parametrize(
    ("backbone", "img_size", "message"),
    [
        ("vit_tiny_patch16_2244", 64, "not a timm model. Did you mean: vit_tiny_patch16_224"),
        ("levit_128s", 224, "needs 4 feature levels, this model has 3"),
        ("vit_tiny_patch16_224", 72, "--img-size 72 does not fit --backbone vit_tiny_patch16_224: its feature "
                                     "levels have a stride of 16 pixels; use a multiple of 16 such as 64 or 80"),
        ("resnet10t", 48, "use a multiple of 32 such as 32 or 64"),
        ("rectangular_patch_vit", 64, "gives a (4, 8) token grid at --img-size 64, PromptIQA needs a square one"),
    ],
)
def test_backbone_that_cannot_work_is_refused(backbone, img_size, message):
    with pytest.raises(UserError, match="--backbone") as err:
        PromptIQA(ModelConfig(backbone, img_size))
    assert message in str(err.value)
