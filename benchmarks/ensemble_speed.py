"""What a prompt pool costs at scoring time: one set of prompt-num ISPs, an ensemble of K sets (with
and without its interval), and the whole pool as one long set, each over the same query files
(decoding included), on one Scorer.

By default the queries and the pool are demo_kadid images (built on first use) scored with the demo
checkpoint; the pool's scores are its labels. The calibration of the interval is paid once per pool
and is reported on its own.

    python -m benchmarks.ensemble_speed --checkpoint runs/demo/best.pth.tar            (500 queries, pool 50)
    python -m benchmarks.ensemble_speed --checkpoint CKPT --queries 64 --repeats 1
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from PromptIQA.data.demo import build_demo
from PromptIQA.data.prompts import PromptSet
from PromptIQA.models.checkpoint import load_model
from PromptIQA.models.prompt_pool import ENSEMBLE_SETS, build_ensemble
from PromptIQA.scoring.saved_prompts import prepare_prompts
from PromptIQA.scoring.scorer import Scorer
from PromptIQA.utils.constants import DEFAULT_SEED


def demo_images(count: int) -> tuple[list[str], list[float]]:
    """The first `count` demo_kadid images in label-file order, with their labels on [0, 1]."""
    folder = Path(build_demo()["demo_kadid"])
    with open(folder / "dmos.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:count]
    return [str(folder / "images" / r["dist_img"]) for r in rows], [(float(r["dmos"]) - 1) / 5 for r in rows]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="e.g. runs/demo/best.pth.tar (python train.py --demo)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--pool", type=int, default=50, help="ISPs in the pool")
    parser.add_argument("--ensemble", type=int, default=ENSEMBLE_SETS, help="sets in the ensemble")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="decoding processes")
    parser.add_argument("--repeats", type=int, default=3, help="passes per row; the fastest is reported")
    return parser.parse_args(argv)


def fastest(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = load_model(args.checkpoint, device=torch.device("cpu"))
    scorer = Scorer(model, batch_size=args.batch_size, workers=args.workers)
    paths, labels = demo_images(args.pool + args.queries)
    pool = prepare_prompts(scorer, PromptSet(tuple(paths[: args.pool]), tuple(labels[: args.pool])))
    queries = paths[args.pool :]
    size = model.prompt_num
    with torch.no_grad():
        one = pool.vectors[torch.linspace(0, args.pool - 1, size).round().long()]
        ensemble = build_ensemble(model, None, pool.vectors, pool.prompt_set.scores, size, args.ensemble, DEFAULT_SEED)
        start = time.perf_counter()
        calibrated = build_ensemble(model, pool.features, pool.vectors, pool.prompt_set.scores, size, args.ensemble,
                                    DEFAULT_SEED, level=0.9)
        calibration = time.perf_counter() - start
    rows = [(f"one set of {size}", one), (f"ensemble of {args.ensemble}", ensemble),
            (f"ensemble of {args.ensemble}, 0.9 interval", calibrated), (f"all {args.pool} as one set", pool.vectors)]
    scorer.score_images(queries[: args.batch_size], one)  # warm-up
    print(f"{len(queries)} query files, {model.config.backbone} at {model.config.img_size} px, batch "
          f"{args.batch_size}, {args.workers} decoding processes, {torch.get_num_threads()} threads, fastest of "
          f"{args.repeats}")
    print(f"{'prompts':<32} {'seconds':>8} {'img/s':>8} {'x one set':>10}")
    baseline = None
    for name, prompts in rows:
        seconds = fastest(args.repeats, lambda p=prompts: list(scorer.iter_results(queries, p)))
        baseline = baseline or seconds
        print(f"{name:<32} {seconds:8.2f} {len(queries) / seconds:8.1f} {seconds / baseline:10.2f}")
    print(f"calibrating the interval on the pool of {args.pool} (once per pool): {calibration * 1000:.0f} ms")


if __name__ == "__main__":
    main()
