"""Studio latency: page and API response times of ``lmtune studio`` with 50 runs in its runs folder.

Issue #16's target: p95 latency of every page and API under 200 ms with 50 runs in the folder. Builds a
runs folder of ``--runs`` runs in a temporary directory: copies of a real run directory when there is one
(``--source``, default ``runs/demo``, made by ``lmtune demo``; its ``checkpoints/`` and ``final/`` are left
out, the studio reads neither), otherwise synthetic runs of realistic size (seven systems, ``--examples``
test predictions each with intervals, 300 lines of ``metrics.jsonl``, a data report). It says which it
used. Then it starts the real server (``StudioServer``, port 0) and requests, over a socket with an HTTP
client, the Runs page and API, a run's page, curves and predictions, and the Compare page and API:
3 warm-ups, then ``--requests`` each, one at a time, the run names rotating through the folder (a user
browsing it). An endpoint answering 404 is reported as missing rather than measured. Prints p50, p95 and
max per endpoint, the overall p95, the machine's load average at the start, and a PASS/FAIL line (every
endpoint's p95 under ``--threshold-ms``, no errors); the last line is one JSON object (``--json`` also
writes it to a file). Exits 1 on FAIL.

Usage: python benchmarks/studio_latency.py [--source RUN_DIR | --synthetic] [--runs 50] [--examples 400]
       [--requests 50] [--threshold-ms 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx

from lmtune.evaluate import cost
from lmtune.evaluate.metrics import classification_metrics
from lmtune.run_dir import RunDir

WARMUPS = 3
LABELS = ["negative", "neutral", "positive", "mixed_or_unclear"]
# system: (share answered right, prompt tokens, latency s)
SYSTEMS = {"zero_shot": (0.30, 149, 0.21), "few_shot": (0.68, 760, 0.93), "rag": (0.50, 463, 0.61),
           "finetuned": (0.78, 149, 0.22), "finetuned+rag": (0.74, 463, 0.62), "majority": (0.25, 0, 0.0),
           "model:HuggingFaceTB/SmolLM2-1.7B-Instruct": (0.55, 149, 1.9)}
PRICES = {"prompt_per_1k_tokens": 0.0003, "completion_per_1k_tokens": 0.0012, "training_per_1k_tokens": 0.003}
WORDS = ("the this drug pill dose pain sleep headache nausea anxiety weight mood energy doctor week month helped "
         "worked stopped started better worse great terrible fine side effects really not never again after").split()


# --- the runs folder -----------------------------------------------------------------------------------------

def copy_runs(source: Path, runs: Path, count: int) -> None:
    """``count`` copies of the run ``source`` (without its weights: ``checkpoints/``, ``final/``)."""
    def weights(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if Path(directory) == source and n in ("checkpoints", "final")]

    for i in range(count):
        shutil.copytree(source, runs / f"{source.name}-{i:02d}", ignore=weights)


def _review(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90)))


def _result(references: list[str], guess: list[str], prompt_tokens: int, latency: float) -> dict:
    """One system's results as the evaluation writes them, with normal-approximation 95% intervals."""
    result = classification_metrics(references, guess, LABELS)
    half = {k: 1.96 * (result[k] * (1 - result[k]) / len(references)) ** 0.5
            for k in ("accuracy", "f1_macro", "precision_macro", "recall_macro")}
    result["ci"] = {k: [max(0.0, result[k] - h), min(1.0, result[k] + h)] for k, h in half.items()}
    result.update(truncated_prompts=0, latency_s=latency, prompt_tokens_mean=float(prompt_tokens),
                  completion_tokens_mean=1.0 if prompt_tokens else 0.0,
                  measured_at={"load_avg_1m": 1.3, "cpu_count": 2})
    return {**result, **cost.per_query(result, PRICES)}


def _curves(files: RunDir, rng: random.Random, learning_rate: float) -> None:
    """300 lines of ``metrics.jsonl``: 250 training steps logged every 5, validation every 25; and the timing."""
    metrics, timing = [], []
    for step in range(5, 1251, 5):
        metrics.append({"step": step, "epoch": round(step / 625, 4), "split": "train",
                        "loss": 2.0 / (1 + step / 100) + rng.random() * 0.05, "lr": learning_rate * (1 - step / 1260)})
        timing.append({"step": step, "tokens_per_s": 450.0 + rng.random() * 40, "elapsed_s": step * 2.1})
        if step % 25 == 0:
            metrics.append({"step": step, "epoch": round(step / 625, 4), "split": "validation",
                            "loss": 2.1 / (1 + step / 120)})
    files.metrics.write_text("".join(json.dumps(r) + "\n" for r in metrics))
    files.timing.write_text("".join(json.dumps(r) + "\n" for r in timing))


def _data_report(files: RunDir, records: list[dict], seed: int) -> None:
    n = len(records)
    files.data.path.mkdir(parents=True, exist_ok=True)
    files.data.split("test").write_text("".join(json.dumps(r) + "\n" for r in records))
    source = "/home/someone/data/drug-reviews-train.jsonl"
    steps = [{"split": "train", "step": "read", "records": 4 * n},
             {"split": "train", "step": "exact duplicates removed", "records": 4 * n - 6, "removed": 6,
              "examples": [{"source": f"{source}:{i}", "repeats": f"{source}:{i + 9}"} for i in range(6)]},
             {"split": "test", "step": "split from train (20%)", "records": n}]
    report = {"sources": {"train": source}, "steps": steps, "counts": {"train": 3 * n, "validation": n // 3, "test": n},
              "label_distribution": {"test": {label: n // 4 for label in LABELS}},
              "leakage": {"exact": 1, "near": 2, "policy": "drop", "dropped_from_train": 3,
                          "examples": [{"source": f"{source}:5", "matches": "test:3", "kind": "exact"}]},
              "truncation": {"max_length": 256, "train": {"truncated": 7, "total": 3 * n}},
              "token_lengths": {"train": [40 + (i * 37) % 260 for i in range(3 * n)],
                                "test": [45 + (i * 53) % 240 for i in range(n)]},
              "test_sha256": f"{seed:064x}"}
    files.data.report.write_text(json.dumps(report))


def synthetic_run(path: Path, index: int, examples: int) -> None:
    """A finished classification run with every file the studio reads, of the size a real one has."""
    rng = random.Random(index)
    files = RunDir(path)
    path.mkdir(parents=True)
    learning_rate, seed = (1e-4, 2e-4, 5e-4)[index % 3], index % 5
    files.write_recipe({"name": f"drug-reviews-{index:02d}", "seed": seed, "model": "smollm2-135m-instruct",
                        "task": {"type": "classification", "labels": LABELS, "template": "sentiment"},
                        "data": {"train": "data/drug-reviews-train.jsonl", "split": {"validation": 0.1, "test": 0.2}},
                        "method": {"name": "lora", "peft": {"r": 16, "lora_alpha": 32}},
                        "training": {"epochs": 2, "learning_rate": learning_rate, "max_length": 256}})
    files.write_manifest({"seed": seed, "packages": {"torch": "2.13.0"}, "created": "2026-11-27T12:00:00Z"})
    records = [{"text": _review(rng), "label": rng.choice(LABELS)} for _ in range(examples)]
    references = [r["label"] for r in records]
    results = {}
    for system, (skill, prompt_tokens, latency) in SYSTEMS.items():
        guess = [ref if rng.random() < skill else rng.choice(LABELS) for ref in references]
        guess = ["positive"] * examples if system == "majority" else guess
        files.write_predictions(system, [{"input": r["text"], "reference": r["label"], "prediction": p}
                                         for r, p in zip(records, guess)])
        results[system] = _result(references, guess, prompt_tokens, latency)
    files.write_eval({"task": "classification", "n": examples, "labels": LABELS, "primary_metric": "f1_macro",
                      "prices_per_1k_tokens": PRICES, "results": results,
                      "training": {"train_steps": 1250, "best_val_loss": 0.41, "best_step": 1000,
                                   **cost.training(300000, 2625.0, PRICES)}})
    _data_report(files, records, seed)
    _curves(files, rng, learning_rate)
    now = time.time()
    files.write_status({"state": "finished", "pid": 0, "host": "benchmark", "started_at": now - 3600 + index,
                        "attempt_started_at": now - 3600 + index, "elapsed_before_s": 0.0, "attempts": 1,
                        "ended_at": now - 900, "elapsed_s": 2700.0, "error": None})
    files.report.write_text(f"<!DOCTYPE html><html><body><h1>report of run {index}</h1></body></html>")


def build_folder(runs: Path, source: Path | None, count: int, examples: int) -> str:
    """Fill ``runs``; what it holds, in words."""
    runs.mkdir(parents=True)
    if source is not None:
        copy_runs(source, runs, count)
        return f"{count} copies of the real run {source}"
    for i in range(count):
        synthetic_run(runs / f"run-{i:02d}", i, examples)
    return f"{count} synthetic runs (7 systems, {examples} test predictions each, 300 metrics lines)"


# --- the requests ------------------------------------------------------------------------------------------

def endpoints(names: list[str], system: str) -> dict[str, object]:
    """Each endpoint's label and a function from the request number to its URL (the runs rotate)."""
    def pair(i: int) -> str:
        return f"run={names[i % len(names)]}&run={names[(i + 1) % len(names)]}"

    return {"/": lambda i: "/",
            "/api/runs": lambda i: "/api/runs",
            "/runs/<name>": lambda i: f"/runs/{names[i % len(names)]}",
            "/api/runs/<name>/curves": lambda i: f"/api/runs/{names[i % len(names)]}/curves",
            "/api/runs/<name>/predictions": lambda i: (f"/api/runs/{names[i % len(names)]}/predictions?system={system}"
                                                       "&correct=incorrect&offset=0&limit=50"),
            "/compare?run=..&run=..": lambda i: f"/compare?{pair(i)}",
            "/api/compare?run=..&run=..": lambda i: f"/api/compare?{pair(i)}"}


def _get(client: httpx.Client, url: str) -> tuple[int, float]:
    started = time.perf_counter()
    response = client.get(url)
    response.read()
    return response.status_code, time.perf_counter() - started


def measure(client: httpx.Client, url_of, requests: int) -> dict:
    """Warm-ups, then ``requests`` timed GETs one after another: milliseconds per request, or why none."""
    for i in range(WARMUPS):
        status, _ = _get(client, url_of(i))
        if status == 404:
            return {"missing": True, "status": 404, "example": url_of(i)}
    times, errors = [], []
    for i in range(requests):
        status, seconds = _get(client, url_of(i))
        times.append(seconds * 1000)
        if status != 200:
            errors.append(f"{status} {url_of(i)}")
    ordered = sorted(times)
    return {"missing": False, "requests": requests, "errors": len(errors), "first_error": errors[0] if errors else None,
            "p50_ms": round(statistics.median(ordered), 1), "p95_ms": round(_p95(ordered), 1),
            "max_ms": round(ordered[-1], 1), "times_ms": times, "example": url_of(0)}


def _p95(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def prediction_system(runs: Path, name: str) -> str:
    systems = RunDir(runs / name).prediction_systems()
    return "finetuned" if "finetuned" in systems or not systems else systems[0]


def serve_and_measure(runs: Path, requests: int) -> dict[str, dict]:
    """Start ``lmtune studio`` over ``runs`` on a free port and time every endpoint against it."""
    from lmtune.studio.server import StudioServer

    names = sorted(p.name for p in runs.iterdir() if RunDir(p).is_run)
    server = StudioServer(runs, port=0, quiet=True).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return {label: measure(client, url_of, requests)
                    for label, url_of in endpoints(names, prediction_system(runs, names[0])).items()}
    finally:
        server.stop()


# --- the verdict -------------------------------------------------------------------------------------------

def summarise(results: dict[str, dict], threshold: float) -> dict:
    measured = {k: r for k, r in results.items() if not r["missing"]}
    every = sorted(t for r in measured.values() for t in r["times_ms"])
    slow = [k for k, r in measured.items() if r["p95_ms"] >= threshold]
    failed = [k for k, r in measured.items() if r["errors"]]
    return {"overall_p95_ms": round(_p95(every), 1) if every else None, "slow": slow, "errors": failed,
            "missing": [k for k, r in results.items() if r["missing"]],
            "passed": bool(measured) and not slow and not failed}


def report(results: dict[str, dict], summary: dict, threshold: float) -> None:
    print(f"{'endpoint':32s} {'n':>4s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s}")
    for label, r in results.items():
        if r["missing"]:
            print(f"{label:32s} missing (404 on {r['example']})")
            continue
        errors = f"  {r['errors']} errors, first: {r['first_error']}" if r["errors"] else ""
        print(f"{label:32s} {r['requests']:4d} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['max_ms']:8.1f}{errors}")
    print(f"overall p95: {summary['overall_p95_ms']} ms")
    missing = f" ({len(summary['missing'])} endpoint(s) missing, not measured)" if summary["missing"] else ""
    if summary["passed"]:
        print(f"PASS: every endpoint's p95 is under {threshold:.0f} ms{missing}")
    else:
        why = [f"p95 >= {threshold:.0f} ms: {', '.join(summary['slow'])}"] if summary["slow"] else []
        why += [f"errors: {', '.join(summary['errors'])}"] if summary["errors"] else []
        print(f"FAIL: {'; '.join(why) or 'nothing could be measured'}{missing}")


def source_run(args: argparse.Namespace) -> Path | None:
    """The run to copy: ``--source`` (it must be a run), else ``runs/demo`` when there is one, else None."""
    if args.synthetic:
        return None
    if args.source is not None:
        if not RunDir(args.source).is_run:
            raise SystemExit(f"error: {args.source}: not an lmtune run directory (no recipe.yaml and manifest.json)")
        return args.source.resolve()
    return Path("runs/demo").resolve() if RunDir(Path("runs/demo")).is_run else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=None, help="a run directory to copy (default: runs/demo if "
                        "there is one, else synthetic runs)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic runs even when runs/demo exists")
    parser.add_argument("--runs", type=int, default=50, help="runs in the folder")
    parser.add_argument("--examples", type=int, default=400, help="test predictions per system (synthetic runs)")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per endpoint")
    parser.add_argument("--threshold-ms", type=float, default=200.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args()
    load = os.getloadavg()  # other work on the machine moves every number; it is recorded with them
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        started = time.perf_counter()
        what = build_folder(runs, source_run(args), args.runs, args.examples)
        print(f"runs folder: {what} (built in {time.perf_counter() - started:.1f} s)", flush=True)
        print(f"load average at the start: {load[0]:.2f} (1 min) on {os.cpu_count()} CPUs", flush=True)
        results = serve_and_measure(runs, args.requests)
    summary = summarise(results, args.threshold_ms)
    report(results, summary, args.threshold_ms)
    out = {"benchmark": "studio_latency", "runs_folder": what, "runs": args.runs, "requests": args.requests,
           "warmups": WARMUPS, "threshold_ms": args.threshold_ms, "cpu_count": os.cpu_count(),
           "load_average_start": [round(x, 2) for x in load], "load_average_end": round(os.getloadavg()[0], 2),
           **summary, "endpoints": {k: {f: v for f, v in r.items() if f != "times_ms"} for k, r in results.items()}}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
    sys.exit(0 if summary["passed"] else 1)


if __name__ == "__main__":
    main()
