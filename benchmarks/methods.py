"""Every registered fine-tuning method on the demo classification recipe, 20 steps each.

For each method: `lmtune train recipes/drug-reviews-demo.yaml --set method.name=<m>
--set training.max_steps=20` (plus a validation pass every 10 steps and the fine-tuned system only,
on the first 100 test reviews, to keep it short), each in its own process. Reports trainable
parameters (count and %), peak RSS of the process, seconds per optimizer step, best validation
loss and the fine-tuned macro-F1, and whether the run directory is complete. A method this
machine cannot run (qlora without CUDA) is listed with its error line.

    python benchmarks/methods.py [--steps 20] [--methods lora,dora,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "drug-reviews-demo.yaml"
RUN_FILES = ["recipe.yaml", "manifest.json", "data", "metrics.jsonl", "checkpoints", "final", "eval.json",
             "predictions", "report.html"]
LORA_FAMILY = {"lora", "dora", "qlora"}  # the demo recipe's peft options are LoRA options

CHILD = """
import resource, sys
from lmtune.cli import main
sys.argv = ["lmtune"] + sys.argv[1:]
try:
    main()
finally:
    print("PEAK_RSS_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)
"""


def run_method(method: str, steps: int, out: Path) -> dict:
    args = ["train", str(RECIPE), "--out", str(out), "--quiet", "--set", f"method.name={method}",
            "--set", f"training.max_steps={steps}", "--set", "training.eval_every=10",
            "--set", "eval.systems=[finetuned]", "--set", "eval.max_examples=100"]
    if method not in LORA_FAMILY:
        args += ["--set", "method.peft={}"]
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    peak = next((float(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_MB")), None)
    if proc.returncode:
        error = next((line for line in proc.stderr.splitlines() if line.startswith("error:")), proc.stderr[-500:])
        return {"method": method, "exit_code": proc.returncode, "error": error}
    body = json.loads((out / "eval.json").read_text())
    training = body["training"]
    return {"method": method, "exit_code": 0,
            "trainable_parameters": training["trainable_parameters"],
            "trainable_percent": round(100 * training["trainable_parameters"] / training["total_parameters"], 3),
            "peak_rss_mb": round(peak or 0),
            "seconds_per_step": round(training["train_seconds"] / training["train_steps"], 2),
            "best_val_loss": training["best_val_loss"],
            "f1_macro": body["results"].get("finetuned", {}).get("f1_macro"),
            "complete_run_directory": all((out / name).exists() for name in RUN_FILES)}


def main() -> None:
    from lmtune.methods import registry

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--methods", default=",".join(registry.names()))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in [m for m in args.methods.split(",") if m]:
            print(f"{method} ...", file=sys.stderr, flush=True)
            row = run_method(method, args.steps, Path(tmp) / method)
            rows.append(row)
            print("  " + json.dumps(row), file=sys.stderr, flush=True)
    print("| method | trainable parameters | % | peak RSS MB | s/step | best val loss | macro-F1 (100 test) |",
          file=sys.stderr)
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    for r in rows:
        if r["exit_code"]:
            print(f"| {r['method']} | {r['error']} | | | | | |", file=sys.stderr)
        else:
            print(f"| {r['method']} | {r['trainable_parameters']:,} | {r['trainable_percent']} | {r['peak_rss_mb']} | "
                  f"{r['seconds_per_step']} | {r['best_val_loss']:.4f} | {r['f1_macro']:.4f} |", file=sys.stderr)
    print(json.dumps({"steps": args.steps, "methods": rows}))


if __name__ == "__main__":
    main()
