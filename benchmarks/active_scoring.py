"""Scoring an unlabelled pool for selection: examples/s of ``lmtune active``'s scoring on the real model.

A pool of ``--n`` records (default 10,000) is scored zero-shot by SmolLM2-135M-Instruct (the packaged
``smollm2-135m-instruct``) through the path ``lmtune active`` takes for an uncertainty strategy
(:mod:`lmtune.active.scoring`: the recipe's template rendered as evaluation renders it, label scoring by
label log-likelihood, softmax), then ranked by entropy (``--strategy``). The pool is SST-2's training
sentences (``../shared/data/sst2``, 2 labels) or Banking77's queries (``--data banking77``, 77 labels), read in
place and never copied into the project; without ``../shared`` the benchmark says so and exits 0 (``--data
synthetic`` builds reviews from a small vocabulary instead, for a machine without it). Prints the pool size,
seconds and examples/s of scoring and of selection, the machine's load, and writes the same JSON object to
``--json`` (default ``active_scoring.json``) and as its last line.

Usage: python benchmarks/active_scoring.py [--n 10000] [--data sst2|banking77|synthetic] [--strategy entropy]
       [--batch-size 8] [--threads T] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MODEL = "smollm2-135m-instruct"
SOURCES = {"sst2": ("sst2/train.jsonl", "sentiment"), "banking77": ("banking77/train.jsonl", "classification")}
WORDS = ("the film was great awful boring moving slow funny long dull sharp warm cold clever plot acting music "
         "ending cast story pace").split()


def pool_records(data: str, n: int, seed: int = 0) -> tuple[list[dict], list[str], str]:
    """(pool records {"text"}, the label set, the template) for ``data``; labels are dropped from the pool."""
    if data == "synthetic":
        rng = random.Random(seed)
        texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 20))) for _ in range(n)]
        return [{"text": t} for t in texts], ["negative", "positive"], "sentiment"
    relative, template = SOURCES[data]
    with open(SHARED / relative, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    labels = sorted({r["label"] for r in rows})
    picked = random.Random(seed).sample(rows, min(n, len(rows)))
    while len(picked) < n:  # Banking77 and SST-2 hold 10,003 and 20,000 records; never short of the default
        picked += picked[: n - len(picked)]
    return [{"text": r["text"]} for r in picked], labels, template


def recipe_for(labels: list[str], template: str, batch_size: int, train: Path):
    from lmtune.recipe import recipe_from_dict

    return recipe_from_dict({
        "name": "active-bench", "seed": 0, "model": MODEL,
        "task": {"type": "classification", "labels": labels, "template": template, "head": False},
        "data": {"train": str(train)}, "eval": {"batch_size": batch_size}, "training": {"max_length": 256}})


def measure(records: list[dict], labels: list[str], template: str, strategy: str, batch_size: int) -> dict:
    from lmtune.active import queue, selection
    from lmtune.active.scoring import Scorer
    from lmtune.progress import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        pool = Path(tmp) / "pool.jsonl"
        pool.write_text("".join(json.dumps(r) + "\n" for r in records))
        recipe = recipe_for(labels, template, batch_size, pool)
        started = time.perf_counter()
        plan = queue.plan(recipe, pool, min(100, len(records)), strategy, out=Path(tmp) / "queue.jsonl")
        checked = time.perf_counter() - started
        scorer = Scorer(recipe, None, [], plan.pool.examples[0].format)
        load_started = time.perf_counter()
        scorer.load()  # before the clock starts: the figure is scoring, not loading
        loaded = time.perf_counter() - load_started
        choice = selection.choose(scorer, plan.pool.examples, strategy, plan.budget, 0)
    return {"pool": len(records), "labels": len(labels), "strategy": strategy, "batch_size": batch_size,
            "device": scorer.device, "precision": scorer.spec.precision, "read_and_check_s": round(checked, 2),
            "model_load_s": round(loaded, 2), "scored": choice.scored, "passes": choice.passes,
            "select_s": round(choice.seconds, 2),
            "examples_per_s": round(choice.scored * choice.passes / choice.seconds, 1),
            "chosen_score_range": [min(choice.scores), max(choice.scores)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="pool records")
    parser.add_argument("--data", choices=["sst2", "banking77", "synthetic"], default="sst2")
    parser.add_argument("--strategy", default="entropy")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=Path("active_scoring.json"))
    args = parser.parse_args()
    if args.data != "synthetic" and not (SHARED / SOURCES[args.data][0]).is_file():
        message = f"{SHARED / SOURCES[args.data][0]} not found (it ships with the shared data, not with lmtune)"
        print(f"skipped: {message}; --data synthetic runs without it", file=sys.stderr)
        print(json.dumps({"skipped": message}))
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    records, labels, template = pool_records(args.data, args.n)
    load = os.getloadavg()[0]
    result = {"data": args.data, "model": MODEL, "load_before": round(load, 2), "threads": torch.get_num_threads(),
              **measure(records, labels, template, args.strategy, args.batch_size),
              "load_after": round(os.getloadavg()[0], 2)}
    print(f"scored {result['scored']} {args.data} records x {result['passes']} pass(es) in {result['select_s']} s: "
          f"{result['examples_per_s']} examples/s on {result['device']} ({result['precision']}), load "
          f"{result['load_before']} -> {result['load_after']}", file=sys.stderr)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
