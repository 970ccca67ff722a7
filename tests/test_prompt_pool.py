"""Prompt pools: ensembles of sets drawn from a pool, calibrated intervals, prompt selection, in the
library, the Scorer, test.py, saved sets and create_metric."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch
from conftest import write_image
from training_fixtures import write_training_data

from PromptIQA.commands import score
from PromptIQA.commands.common import run_main
from PromptIQA.data.prompts import read_prompt_file
from PromptIQA.models import ModelConfig, PromptIQA
from PromptIQA.models.checkpoint import save_checkpoint
from PromptIQA.models.prompt_pool import (
    Calibration,
    build_ensemble,
    draw_sets,
    score_sets,
    select_prompts,
)
from PromptIQA.scoring.metric import ScoresWithInterval, create_metric
from PromptIQA.scoring.outputs import read_scores
from PromptIQA.scoring.pools import select_from_pool
from PromptIQA.scoring.saved_prompts import (
    _FORMAT,
    prepare_prompts,
    read_saved_prompts,
    vectors_checksum,
)
from PromptIQA.scoring.scorer import Scorer
from PromptIQA.utils.errors import UserError
from PromptIQA.utils.stats import correlations

POOL = 24  # ISPs in the test pool: enough to calibrate a 0.9 interval (20 or more)
SMALL = ModelConfig("vit_tiny_patch16_224", 32, prompt_num=4)  # 4 tokens per image: fast on a CPU


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory):
    """A pool of 24 real PNG files with scores spread over [0, 1], a 4-ISP prompt file, and 5 queries."""
    root = tmp_path_factory.mktemp("pool")
    rows = []
    for i in range(POOL):
        write_image(root / "pool" / f"p{i:02d}.png", seed=i)
        rows.append([f"pool/p{i:02d}.png", round(i / (POOL - 1), 4)])
    (root / "pool.json").write_text(json.dumps({"isp": rows}))
    (root / "small.json").write_text(json.dumps({"isp": rows[::6]}))
    for i in range(5):
        write_image(root / "queries" / f"q{i}.png", seed=100 + i)
    return root


@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
    """A tiny network whose score head is not flat: random weights scaled so scores spread out."""
    torch.manual_seed(1)
    model = PromptIQA(SMALL).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("i_p_fusion", "mlp", "prompt_fusion", "blocks", "score_block")) and p.dim() > 1:
                p.mul_(3)
    path = tmp_path_factory.mktemp("ckpt") / "spread.pth.tar"
    save_checkpoint({"model": model.state_dict(), "model_config": SMALL.to_dict(), "prompt_num": 4}, path)
    return model, path


def test_sets_are_stratified_deterministic_and_leave_one_out():
    scores = np.linspace(0, 1, 23)[np.random.default_rng(0).permutation(23)]
    sets = draw_sets(scores, 5, 7, seed=3)
    assert sets.shape == (7, 5)
    order = np.argsort(scores, kind="stable")
    strata = [set(s.tolist()) for s in np.array_split(order, 5)]
    for chosen in sets:  # one ISP from each fifth of the score range
        assert [sum(int(i) in stratum for i in chosen) for stratum in strata] == [1] * 5
    assert len({tuple(s) for s in sets}) == 7  # the strata hold 4-5 ISPs: every set differs
    assert np.array_equal(sets, draw_sets(scores, 5, 7, seed=3))
    assert not np.array_equal(sets, draw_sets(scores, 5, 7, seed=4))
    assert 11 not in draw_sets(scores, 5, 30, seed=3, leave_out=11)
    with pytest.raises(UserError, match="a pool of 3 ISPs cannot make sets of 4"):
        draw_sets([0.1, 0.2, 0.3], 4, 2, seed=0)


def test_ensemble_scores_are_the_mean_of_each_sets_scores(trained_like):
    model, _ = trained_like
    generator = torch.Generator().manual_seed(0)
    features, pool = torch.randn(6, 128, generator=generator), torch.randn(POOL, 128, generator=generator)
    vectors = model.prompt_vectors(pool, torch.linspace(0, 1, POOL))
    with torch.no_grad():
        ensemble = build_ensemble(model, None, vectors, np.linspace(0, 1, POOL).tolist(), 4, 5, seed=1)
        scores = ensemble.score(model, features)
        each = torch.stack([model.score_features(features, vectors[chosen]) for chosen in ensemble.sets])
    assert ensemble.sets.shape == (5, 4)
    torch.testing.assert_close(score_sets(model, features, vectors, ensemble.sets), each, atol=1e-5, rtol=0)
    torch.testing.assert_close(scores.mean, each.mean(dim=0), atol=1e-5, rtol=0)
    torch.testing.assert_close(scores.spread, each.std(dim=0, correction=0), atol=1e-5, rtol=0)
    assert scores.spread.min() > 0 and scores.low is None


def test_conformal_coverage_on_a_synthetic_case_with_known_noise():
    """Labels = mean + spread x Gaussian noise: the interval's coverage is the level (marginally over
    calibration draws: between the level and level + 1/(n + 1)), and its width follows the spread."""
    rng = np.random.default_rng(0)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, spread = rng.uniform(0.2, 0.8, n), rng.uniform(0.01, 0.1, n)
        return tuple(torch.tensor(v, dtype=torch.float32) for v in (mean + spread * rng.normal(size=n), mean, spread))

    coverages = []
    for _ in range(40):
        calibration = Calibration.fit(*sample(200))
        labels, mean, spread = sample(2000)
        half = calibration.half_width(spread, 0.9)
        coverages.append(float(((labels - mean).abs() <= half).float().mean()))
    assert 0.89 <= np.mean(coverages) <= 0.9 + 1 / 201 + 0.005
    assert np.corrcoef(spread.numpy(), half.numpy())[0, 1] > 0.99  # normalised by the spread
    with pytest.raises(UserError, match="a 0.95 interval needs a pool of at least 19 ISPs .*has 9"):
        Calibration.fit(*sample(9)).half_width(spread, 0.95)


def test_image_path_runs_once_per_query_whatever_the_number_of_sets(trained_like, pool_dir, monkeypatch):
    model, _ = trained_like
    scorer = Scorer(model, batch_size=3, workers=0)
    pool = prepare_prompts(scorer, read_prompt_file(pool_dir / "pool.json"))
    queries = sorted(str(p) for p in (pool_dir / "queries").iterdir())
    images_seen = []
    original = model.image_features
    monkeypatch.setattr(model, "image_features", lambda x: images_seen.append(len(x)) or original(x))
    monkeypatch.setattr(scorer, "_image_features", model.image_features)
    for sets in (2, 5, 9):
        images_seen.clear()
        with torch.no_grad():
            ensemble = build_ensemble(model, pool.features, pool.vectors, pool.prompt_set.scores, 4, sets, seed=0)
        results = scorer.score_with_intervals(queries, ensemble)
        assert sum(images_seen) == len(queries)  # not len(queries) x sets
        single = np.stack([scorer.score_images(queries, pool.vectors[chosen]) for chosen in ensemble.sets])
        np.testing.assert_allclose(results["score"], single.mean(axis=0), atol=1e-5)
        np.testing.assert_allclose(results["spread"], single.std(axis=0), atol=1e-5)


def cli(pool_dir, checkpoint, *extra: str) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--prompts", str(pool_dir / "pool.json"), "--images",
            str(pool_dir / "queries"), "--workers", "0", "--device", "cpu", *extra]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_interval_columns_in_every_output_format(trained_like, pool_dir, tmp_path, capsys, suffix):
    _, checkpoint = trained_like
    output = tmp_path / f"scores{suffix}"
    assert run_main(score.main, cli(pool_dir, checkpoint, "--interval", "0.9", "--output", str(output))) == 0
    rows = list(read_scores(output))
    assert len(rows) == 5 and set(rows[0]) == {"path", "score", "error", "spread", "low", "high"}
    for row in rows:
        assert 0 <= row["low"] <= row["score"] <= row["high"] <= 1 and row["spread"] > 0 and row["error"] is None
    printed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [float(v) for v in printed[0][1:]] == pytest.approx(
        [rows[0][c] for c in ("score", "spread", "low", "high")], abs=1e-7)


def test_a_pool_is_one_set_unless_an_ensemble_or_an_interval_is_asked_for(trained_like, pool_dir, tmp_path):
    _, checkpoint = trained_like
    headers = {}
    for name, extra in (("plain", ()), ("ensemble", ("--ensemble", "3")), ("interval", ("--interval", "0.8"))):
        assert run_main(score.main, cli(pool_dir, checkpoint, *extra, "--output", str(tmp_path / f"{name}.csv"))) == 0
        with open(tmp_path / f"{name}.csv", newline="") as f:
            headers[name] = next(csv.reader(f))
    assert headers == {"plain": ["path", "score", "error"], "ensemble": ["path", "score", "error", "spread"],
                       "interval": ["path", "score", "error", "spread", "low", "high"]}


def test_intervals_need_a_big_enough_pool_and_an_ensemble(trained_like, pool_dir, capsys):
    _, checkpoint = trained_like
    small = cli(pool_dir, checkpoint, "--interval", "0.9")
    small[small.index("--prompts") + 1] = str(pool_dir / "small.json")
    assert run_main(score.main, small) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --interval 0.9: ") and "give at least 20 ISPs (this pool has 4)" in err
    assert run_main(score.main, cli(pool_dir, checkpoint, "--interval", "0.9", "--ensemble", "1")) == 2
    assert "use two or more sets" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        score.main(cli(pool_dir, checkpoint, "--interval", "1.5"))
    assert exited.value.code == 2
    assert "'1.5': give the coverage as a fraction between 0 and 1" in capsys.readouterr().err


def test_saved_pools_round_trip_with_what_calibration_needs(trained_like, pool_dir, tmp_path):
    _, checkpoint = trained_like
    saved = tmp_path / "pool.pt"
    assert run_main(score.main, ["--checkpoint", str(checkpoint), "--prompts", str(pool_dir / "pool.json"),
                                 "--save-prompts", str(saved), "--device", "cpu"]) == 0
    assert read_saved_prompts(saved).features.shape == (POOL, 128)
    direct, reused = tmp_path / "direct.csv", tmp_path / "reused.csv"
    assert run_main(score.main, cli(pool_dir, checkpoint, "--interval", "0.9", "--output", str(direct))) == 0
    again = cli(pool_dir, checkpoint, "--interval", "0.9", "--output", str(reused))
    again[again.index("--prompts") + 1] = str(saved)
    assert run_main(score.main, again) == 0
    assert reused.read_text() == direct.read_text()


def test_a_version_2_saved_set_still_scores_but_cannot_be_calibrated(trained_like, pool_dir, tmp_path, capsys):
    model, checkpoint = trained_like
    saved = tmp_path / "pool.pt"
    assert run_main(score.main, ["--checkpoint", str(checkpoint), "--prompts", str(pool_dir / "pool.json"),
                                 "--save-prompts", str(saved), "--device", "cpu"]) == 0
    record = torch.load(saved, weights_only=True)
    old = {key: value for key, value in record.items() if key != "features"}
    old.update(version=2, vectors_sha256=vectors_checksum(record["vectors"]), format=_FORMAT)
    torch.save(old, tmp_path / "old.pt")
    outputs = {}
    for name in ("pool.pt", "old.pt"):
        args = cli(pool_dir, checkpoint, "--output", str(tmp_path / f"{name}.csv"))
        args[args.index("--prompts") + 1] = str(tmp_path / name)
        assert run_main(score.main, args) == 0
        outputs[name] = (tmp_path / f"{name}.csv").read_text()
    assert outputs["old.pt"] == outputs["pool.pt"]
    args = cli(pool_dir, checkpoint, "--interval", "0.9")
    args[args.index("--prompts") + 1] = str(tmp_path / "old.pt")
    assert run_main(score.main, args) == 2
    assert "saved without the ISPs' image features" in capsys.readouterr().err


class NearestPrompt(torch.nn.Module):
    """A stand-in head: a query scores the score of the prompt whose feature is nearest its own."""

    def fuse_prompts(self, prompts: torch.Tensor) -> torch.Tensor:
        return prompts  # (sets, m, 2): feature, score

    def score_fused(self, features: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        nearest = (fused[..., 0] - features[:, :1]).abs().argmin(dim=1)
        return fused[torch.arange(len(fused)), nearest, 1]


def test_selection_swaps_out_mislabelled_prompts():
    quality = torch.linspace(0, 1, POOL)
    labels = quality.clone()
    start, wrong = [0, 8, 15, 23], [8, 15]
    labels[wrong] = 1 - labels[wrong]  # two of the evenly spaced prompts carry wrong scores
    vectors = torch.stack([quality, labels], dim=1)
    chosen = select_prompts(NearestPrompt(), quality.view(-1, 1), vectors, labels.tolist(), start)
    assert len(set(chosen)) == 4 and not set(chosen) & set(wrong)
    clean = [i for i in range(POOL) if i not in wrong and i not in start and i not in chosen]

    def srcc(prompts: list[int]) -> float:
        predictions = score_sets(NearestPrompt(), quality[clean].view(-1, 1), vectors, torch.tensor([prompts]))[0]
        return correlations(predictions.numpy(), labels[clean].numpy())[0]

    assert srcc(chosen) > srcc(start) + 0.3


def test_selected_prompts_are_printed_and_saved(trained_like, pool_dir, tmp_path, capsys):
    model, checkpoint = trained_like
    saved = tmp_path / "selected.pt"
    assert run_main(score.main, ["--checkpoint", str(checkpoint), "--prompts", str(pool_dir / "pool.json"),
                                 "--select-prompts", "4", "--save-prompts", str(saved), "--device", "cpu"]) == 0
    listed = [line.strip().split("\t")[0] for line in capsys.readouterr().err.split("selected prompts:")[1]
              .splitlines() if line.startswith("  ")]
    selected = read_saved_prompts(saved)
    assert len(listed) == 4 and list(selected.prompt_set.paths) == listed
    pool = prepare_prompts(Scorer(model, workers=0), read_prompt_file(pool_dir / "pool.json"))
    assert select_from_pool(model, pool, 4).prompt_set == selected.prompt_set
    index = [pool.prompt_set.paths.index(p) for p in listed]
    torch.testing.assert_close(selected.vectors, pool.vectors[index])
    torch.testing.assert_close(selected.features, pool.features[index])
    assert run_main(score.main, ["--checkpoint", str(checkpoint), "--prompts", str(pool_dir / "pool.json"),
                                 "--select-prompts", str(POOL), "--device", "cpu"]) == 2
    assert "error: --select-prompts 24: from a pool of 24 ISPs, select 1 to 23" in capsys.readouterr().err


def test_create_metric_returns_the_interval_scores_of_test_py(trained_like, pool_dir, tmp_path):
    _, checkpoint = trained_like
    output = tmp_path / "scores.csv"
    assert run_main(score.main, cli(pool_dir, checkpoint, "--interval", "0.9", "--output", str(output))) == 0
    expected = list(read_scores(output))
    metric = create_metric(checkpoint, pool_dir / "pool.json", device="cpu", interval=0.9)
    got = metric([row["path"] for row in expected])
    assert isinstance(got, ScoresWithInterval)
    for name in ("score", "low", "high", "spread"):
        np.testing.assert_allclose(getattr(got, name).numpy(), [row[name] for row in expected], atol=1e-5)
    assert ((got.low <= got.score) & (got.score <= got.high)).all()
    images = torch.rand(2, 3, 40, 56, requires_grad=True)
    lossy = create_metric(checkpoint, pool_dir / "pool.json", device="cpu", interval=0.9, as_loss=True)
    lossy(images).score.sum().backward()  # the ensemble's mean is differentiable with respect to the input
    assert images.grad is not None and images.grad.abs().sum() > 0
    plain = create_metric(checkpoint, pool_dir / "pool.json", device="cpu", ensemble=1)
    assert isinstance(plain(expected[0]["path"]), torch.Tensor)


def test_pool_flags_are_refused_where_they_do_not_apply(trained_like, pool_dir, tmp_path, capsys):
    _, checkpoint = trained_like
    assert run_main(score.main, cli(pool_dir, checkpoint, "--prompt-pool", "30")) == 2
    assert "--prompt-pool applies with --dataset" in capsys.readouterr().err
    args = cli(pool_dir, checkpoint, "--interval", "0.9", "--onnx", str(tmp_path))
    assert run_main(score.main, args) == 2
    assert "error: --interval: options of the PyTorch runtime" in capsys.readouterr().err


def test_the_pool_experiment_reports_every_use_and_writes_its_csv_and_figure(trained_like, tmp_path, capsys):
    _, checkpoint = trained_like
    info = write_training_data(tmp_path, count=40)  # 32 training images per dataset (units split 80 / 20)
    base = ["--checkpoint", str(checkpoint), "--dataset-info", str(info), "--dataset", "set_a", "set_b",
            "--cache-dir", "none", "--workers", "0", "--device", "cpu"]
    args = base + ["--prompt-pool", "24", "--pool-draws", "2", "--interval", "0.8", "--select-prompts", "4",
                   "--save-dir", str(tmp_path / "out")]
    assert run_main(score.main, args) == 0
    table = capsys.readouterr().out
    for heading in ("one set", "random set", "ensemble", "all 24", "selected", "0.8 coverage", "SRCC confident half"):
        assert heading in table
    with open(tmp_path / "out" / "prompt_pool.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["dataset"], r["draw"]) for r in rows] == [("set_a", "0"), ("set_a", "1"), ("set_b", "0"), ("set_b", "1")]
    for row in rows:
        assert 0 <= float(row["coverage"]) <= 1 and float(row["width"]) > 0
        assert all(-1 <= float(row[f"srcc_{n}"]) <= 1 for n in ("one_set", "random_set", "ensemble", "all_N", "selected"))
    assert rows[0]["width"] != rows[1]["width"]  # two draws, two pools, two calibrations
    figure = cv2.imread(str(tmp_path / "out" / "prompt_pool_coverage.png"))
    assert figure is not None and figure.std() > 0
    too_big = [a if a != "24" else "33" for a in args]
    assert run_main(score.main, too_big) == 2
    assert "error: --prompt-pool set_a: a pool of 33 ISPs asked, but its training split has 32" in capsys.readouterr().err
    assert run_main(score.main, base + ["--interval", "0.8"]) == 2
    assert "--interval with --dataset: give --prompt-pool N too" in capsys.readouterr().err
