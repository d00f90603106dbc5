"""Data-parallel scaling: the demo recipe trained by 1 and by N processes on the same global batch.

Each configuration is a real ``lmtune train`` (``--processes N``, so torchrun's agent starts the processes; gloo
on CPU, NCCL on GPUs), LoRA on smollm2-135m-instruct with the demo's data. Per configuration it reports training
tokens/s over all processes, the scaling efficiency (tokens/s divided by N times the 1-process figure), the peak
memory of each process (resident set on CPU, CUDA memory allocated on a GPU) and the final logged training
loss, which must agree with the 1-process run (same global batch, same examples in every step) within 1%.
Beside the measured peak it puts ``lmtune estimate --processes N``'s figure for one process (its formula under
the strategy, plus what the estimating process held before the model loaded), so the estimate is checked against
what the processes then used (``--no-estimate`` skips it).

On a 2-core CPU machine two processes share the cores the single process had, so no speed-up is expected
there; the figure that matters is on GPUs (target: at least 0.85 efficiency per added GPU with DDP).

Usage:
    python benchmarks/scaling.py [--processes 1,2] [--global-batch 16] [--steps 10] [--no-estimate]
                                 [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "drug-reviews-demo.yaml"


def _overrides(processes: int, global_batch: int, steps: int, extra: list[str]) -> list[str]:
    overrides = [*extra, f"training.max_steps={steps}", f"training.batch_size={global_batch // processes}",
                 "training.eval_every=1000", "training.log_every=1", "eval.systems=[finetuned]",
                 "eval.max_examples=16", "eval.bootstrap=0"]
    return [a for o in overrides for a in ("--set", o)]


def estimate(processes: int, global_batch: int, steps: int, extra: list[str]) -> float:
    """``lmtune estimate``'s memory for one process of the same run (MB): held before the model loaded + formula."""
    command = [sys.executable, "-m", "lmtune.cli", "estimate", str(RECIPE), "--json", "--quiet", "--steps", "1",
               "--processes", str(processes), *_overrides(processes, global_batch, steps, extra)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"lmtune estimate with {processes} process(es) failed:\n{done.stderr[-3000:]}")
    memory = json.loads(done.stdout)["memory"]
    return round(memory["runtime_mb"] + memory["per_process"]["training_total"], 1)


def run(processes: int, global_batch: int, steps: int, out: Path, extra: list[str]) -> dict:
    """One ``lmtune train`` of the demo recipe; what it measured."""
    command = [sys.executable, "-m", "lmtune.cli", "train", str(RECIPE), "--out", str(out), "--quiet",
               *_overrides(processes, global_batch, steps, extra)]
    if processes > 1:
        command += ["--processes", str(processes)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"lmtune train with {processes} process(es) failed:\n{done.stderr[-3000:]}")
    training = json.loads((out / "eval.json").read_text())["training"]
    losses = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"processes": processes, "batch_per_process": global_batch // processes,
            "tokens_per_s": training["train_tokens_per_s"], "train_seconds": training["train_seconds"],
            "peak_memory_mb": training.get("peak_memory_mb"), "memory_kind": training.get("memory_kind"),
            "final_loss": [r["loss"] for r in losses if r["split"] == "train"][-1],
            "losses": [round(r["loss"], 5) for r in losses if r["split"] == "train"],
            "wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (1 first)")
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], help="more overrides, e.g. training.precision=fp32")
    parser.add_argument("--no-estimate", action="store_true", help="skip lmtune estimate's per-process figure")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f} (quote timings from a quiet machine)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            results.append(run(n, args.global_batch, args.steps, Path(tmp) / f"p{n}", args.set))
            if not args.no_estimate:
                results[-1]["estimated_mb"] = estimate(n, args.global_batch, args.steps, args.set)
            print(json.dumps(results[-1]))
    base = results[0]
    print(f"| processes | batch/process | tokens/s | efficiency | peak memory per process (MB, {base['memory_kind']}) "
          "| estimated per process (MB) | final loss | vs 1 process |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        efficiency = r["tokens_per_s"] / (r["processes"] * base["tokens_per_s"])
        change = (r["final_loss"] - base["final_loss"]) / base["final_loss"]
        estimated = f"{r['estimated_mb']:,.0f}" if "estimated_mb" in r else "-"
        print(f"| {r['processes']} | {r['batch_per_process']} | {r['tokens_per_s']:.0f} | {efficiency:.2f} | "
              f"{', '.join(f'{m:,.0f}' for m in r['peak_memory_mb'] or [])} | {estimated} | "
              f"{r['final_loss']:.4f} | {100 * change:+.2f}% |")
    worst = max(abs(r["final_loss"] - base["final_loss"]) / base["final_loss"] for r in results)
    if worst > 0.01:
        raise SystemExit(f"final losses differ by {100 * worst:.2f}% (more than 1%) from the 1-process run")


if __name__ == "__main__":
    main()
