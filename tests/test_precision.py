"""Numeric precision and compilation: resolution, bf16 training and scoring, compile failures."""
from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F
from conftest import EXAMPLES

from PromptIQA.data.prompts import read_prompt_file
from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.checkpoint import load_model
from PromptIQA.models.promptiqa import other_indices
from PromptIQA.scoring import scorer as scorer_module
from PromptIQA.scoring.scorer import Scorer, padded_to
from PromptIQA.utils.device import (
    compile_errors,
    compile_model,
    configure_backends,
    precision_scope,
    resolve_precision,
)
from PromptIQA.utils.errors import UserError

CPU = torch.device("cpu")


def needs_cuda(test):
    """A CUDA test: marked `gpu` (pytest -m gpu), skipped without a GPU."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))



def small_model(seed: int = 0) -> PromptIQA:
    torch.manual_seed(seed)
    return PromptIQA(ModelConfig(backbone="vit_tiny_patch16_224", img_size=64))


def test_auto_precision_is_exact_fp32_on_the_cpu():
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"


@pytest.mark.parametrize(
    "name, expected",
    [("fp16", "use auto, fp32, tf32, bf16"), ("tf32", "on cpu use fp32 or bf16")],
)
def test_precision_errors_name_the_flag_and_the_fix(name, expected):
    with pytest.raises(UserError, match=f"--precision {name}") as error:
        resolve_precision(name, CPU)
    assert expected in str(error.value)


def test_precision_scope_sets_tf32_for_its_scope_only():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        with precision_scope(CPU, "tf32"):
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_bf16_scope_runs_matmuls_in_bf16_with_fp32_weights():
    layer = torch.nn.Linear(8, 8)
    with precision_scope(CPU, "bf16"):
        out = layer(torch.randn(2, 8))
    assert out.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    with precision_scope(CPU, "fp32"):
        assert layer(torch.randn(2, 8)).dtype == torch.float32


def training_step(model: PromptIQA, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One step as training takes it: autocast forward, fp32 L1 loss, Adam step on fp32 weights."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(1)
    images, scores = torch.rand(4, 3, 64, 64) * 2 - 1, torch.rand(4)
    with precision_scope(CPU, precision):
        predictions = model(images, scores)
    loss = F.l1_loss(predictions, scores)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return predictions, loss


def test_bf16_training_step_keeps_fp32_weights_gradients_and_loss():
    model = small_model().train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    predictions, loss = training_step(model, "bf16")
    assert predictions.dtype == torch.float32 and loss.dtype == torch.float32  # the score head stays fp32
    assert torch.isfinite(loss)
    for name, param in model.named_parameters():
        assert param.dtype == torch.float32 and (param.grad is None or param.grad.dtype == torch.float32), name
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.startswith("vit.") for name in changed) and any(name.startswith("MALs.") for name in changed)
    reference, reference_loss = training_step(small_model().train(), "fp32")
    assert abs(loss.item() - reference_loss.item()) < 0.05


def example_scores(scorer: Scorer, example: str, query: str) -> float:
    prompts = scorer.encode_prompt_set(read_prompt_file(EXAMPLES / example / "prompts.json"))
    return float(scorer.score_images([str(EXAMPLES / example / query)], prompts)[0])


def test_bf16_score_of_example1_is_within_0_02_of_fp32(tiny_checkpoint):
    model = load_model(tiny_checkpoint, device="cpu")
    fp32 = example_scores(Scorer(model, precision="fp32"), "Example1", "cactus.png")
    bf16 = example_scores(Scorer(model, precision="bf16"), "Example1", "cactus.png")
    assert 0 <= bf16 <= 1 and abs(bf16 - fp32) <= 0.02, (bf16, fp32)


def test_bf16_scores_are_not_rounded_to_bf16():
    """The score head runs in fp32 under autocast: scores keep more than bf16's 8 significant bits."""
    torch.manual_seed(2)
    scorer = Scorer(small_model().eval(), batch_size=4, precision="bf16")
    prompts = scorer.encode_prompts(torch.rand(3, 3, 64, 64) * 2 - 1, [0.1, 0.5, 0.9])
    scores = torch.from_numpy(scorer.score_images(torch.rand(8, 3, 64, 64) * 2 - 1, prompts))
    assert scores.dtype == torch.float32
    assert not torch.equal(scores, scores.bfloat16().float())


def test_scorer_resolves_its_precision():
    model = small_model()
    assert Scorer(model).precision == "fp32"
    assert Scorer(model, precision="bf16").precision == "bf16"
    with pytest.raises(UserError, match="--precision tf32"):
        Scorer(model, precision="tf32")


def test_compile_model_off_returns_the_model_itself():
    model = torch.nn.Linear(2, 2)
    assert compile_model(model, False) is model


def test_compile_without_a_cpp_compiler_says_to_run_without_compile(monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, "/nonexistent/c++"))
    with pytest.raises(UserError, match="--compile: .*C\\+\\+ compiler.*run without --compile"):
        compile_model(torch.nn.Linear(2, 2), True)
    with pytest.raises(UserError, match="run without --compile"):
        Scorer(small_model(), compile=True)


def assert_a_failing_compilation_becomes_a_user_error():
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no kernels today")

    compiled = torch.compile(torch.nn.Linear(2, 2), backend=broken_backend)
    with pytest.raises(UserError, match="torch.compile failed .*run without --compile"):
        with compile_errors():
            compiled(torch.randn(3, 2))


def test_a_failing_compilation_becomes_a_user_error():
    assert_a_failing_compilation_becomes_a_user_error()


@needs_cuda  # inductor's CPU compilation of the network takes tens of minutes on a small CPU
@pytest.mark.slow
def test_compiled_scorer_matches_eager():
    model = small_model().eval().cuda()
    images = torch.rand(6, 3, 64, 64, device="cuda") * 2 - 1  # a last batch of 2: padded to 4
    eager = Scorer(model, batch_size=4)
    compiled = Scorer(model, batch_size=4, compile=True)
    prompts = eager.encode_prompts(images[:3], [0.2, 0.4, 0.8])
    torch.testing.assert_close(
        torch.from_numpy(compiled.score_images(images, prompts)),
        torch.from_numpy(eager.score_images(images, prompts)),
        rtol=0,
        atol=1e-4,
    )


@needs_cuda
def test_cuda_fp32_scores_example1_like_the_cpu(tiny_checkpoint):
    cpu = example_scores(Scorer(load_model(tiny_checkpoint, device="cpu")), "Example1", "cactus.png")
    cuda = example_scores(Scorer(load_model(tiny_checkpoint, device="cuda"), precision="fp32"), "Example1", "cactus.png")
    assert abs(cuda - cpu) <= 1e-3, (cuda, cpu)


@needs_cuda
def test_cuda_defaults_to_bf16_where_the_gpu_has_it():
    expected = "bf16" if torch.cuda.get_device_capability() >= (8, 0) else "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == expected


@needs_cuda
def test_cuda_bf16_training_step_with_fused_adam():
    device = torch.device("cuda")
    model = small_model().to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    images, scores = torch.rand(4, 3, 64, 64, device=device) * 2 - 1, torch.rand(4, device=device)
    before = model.MALs[0].channel_attention.c_q.weight.detach().clone()
    with precision_scope(device, "bf16"):
        loss = F.l1_loss(model(images, scores), scores)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert not torch.equal(before, model.MALs[0].channel_attention.c_q.weight)


def test_scoring_without_compile_never_enters_the_compile_handler(monkeypatch):
    entered = []
    real = scorer_module.compile_errors

    def recording():
        entered.append(True)
        return real()

    monkeypatch.setattr(scorer_module, "compile_errors", recording)
    scorer = Scorer(small_model().eval(), batch_size=2, workers=0)
    prompts = scorer.encode_prompts(torch.rand(2, 3, 64, 64) * 2 - 1, [0.3, 0.7])
    scorer.score_images(torch.rand(3, 3, 64, 64) * 2 - 1, prompts)
    assert not entered


def test_scoring_batches_leave_the_programs_tf32_flags_alone():
    """The program sets the TF32 flags once (configure_backends); batches never switch them."""
    model = small_model().eval()
    scorer = Scorer(model, batch_size=2, workers=0, precision="fp32")
    seen = []
    model.cnn.register_forward_hook(lambda *_: seen.append(torch.backends.cuda.matmul.allow_tf32))
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        prompts = scorer.encode_prompts(torch.rand(2, 3, 64, 64) * 2 - 1, [0.3, 0.7])
        scorer.score_images(torch.rand(3, 3, 64, 64) * 2 - 1, prompts)
        assert seen and all(seen)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("device, precision, tf32, autotune", [
    ("cuda", "tf32", True, True), ("cuda", "bf16", False, True), ("cpu", "fp32", False, False),
])
def test_the_program_configures_the_backends_once(device, precision, tf32, autotune):
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not tf32
        torch.backends.cudnn.benchmark = False
        configure_backends(torch.device(device), precision)
        assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
        assert torch.backends.cudnn.benchmark is autotune
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def test_a_padded_compiled_function_compiles_once_for_every_batch_size():
    graphs = []

    def counting_backend(graph, example_inputs):
        graphs.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        return graph.forward

    def rows(batch: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.tanh(batch @ weight).sum(dim=1)

    weight = torch.randn(6, 5)
    padded = padded_to(4, torch.compile(rows, backend=counting_backend))
    for size in (4, 3, 1, 4, 2):
        batch = torch.randn(size, 6)
        torch.testing.assert_close(padded(batch, weight), rows(batch, weight), rtol=0, atol=0)
    assert len(graphs) == 1, graphs


def test_the_other_isps_gather_equals_the_published_mask_and_compiles_as_one_graph():
    for b in range(2, 14):
        published = torch.arange(b).repeat(b, 1)[~torch.eye(b, dtype=torch.bool)].view(b, b - 1)
        assert torch.equal(other_indices(b), published), b
    prompts = torch.randn(11, 8)
    explained = torch._dynamo.explain(lambda p: p[other_indices(p.shape[0], p.device)])(prompts)
    assert explained.graph_break_count == 0 and explained.graph_count == 1


def test_compile_failures_are_caught_on_torch_versions_without_inductor_error(monkeypatch):
    """Older torch has no torch._inductor.exc.InductorError; Inductor's failures come as dynamo's."""
    monkeypatch.setitem(sys.modules, "torch._inductor.exc", types.ModuleType("torch._inductor.exc"))
    assert_a_failing_compilation_becomes_a_user_error()
