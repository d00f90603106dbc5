"""lmtune vs TRL SFTTrainer on the same fine-tuning work, each in its own process.

Same base model (smollm2-135m-instruct), same token sequences (drug-review classification as
generation, tokenized once by lmtune's encoder and given to TRL pre-tokenized with -100 on prompt
tokens, i.e. completion-only loss) in the same batches and order (lmtune's length-grouped order,
read sequentially by TRL), same LoRA settings, sequence length, batch, learning rate and
schedule, seed, precision and number of optimizer steps. Reports wall time, training tokens/s (real,
non-padding tokens), peak RSS, final training loss (mean of the last logged window) and validation
loss (both models scored by the same function), then one JSON line with the lmtune/TRL ratios.

Both sides run twice, matched: with gradient checkpointing (TRL's default) and without (lmtune's).
The headline ratios in the last line are the worse of the two.

Needs `trl` (benchmarks/requirements.txt; `make bench` installs it). Usage:
    python benchmarks/vs_trl.py [--steps 30] [--configs checkpointing,no_checkpointing] [--compile]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SETTINGS = {"model": "smollm2-135m-instruct", "max_length": 256, "batch_size": 8, "learning_rate": 2e-4,
            "seed": 42, "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"},
            "n_train": 480, "n_val": 48}


def encoded_data():
    """Train/validation examples, tokenized once with lmtune's encoder (chat template, EOS, prompt masked)."""
    import yaml

    from lmtune import models
    from lmtune.data import prepare as data_stage
    from lmtune.data.encode import Encoder
    from lmtune.data.templates import render, resolve
    from lmtune.demo import demo_recipe_text
    from lmtune.recipe import recipe_from_dict

    recipe = recipe_from_dict(yaml.safe_load(demo_recipe_text()))
    prepared = data_stage.prepare(recipe.data, "classification", recipe.task.labels, recipe.seed)
    tok = models.load_tokenizer(SETTINGS["model"])
    enc = Encoder(tok, SETTINGS["max_length"])
    template = resolve("sentiment", "classification")
    out = {}
    for name, n in (("train", SETTINGS["n_train"]), ("validation", SETTINGS["n_val"])):
        rendered = [render(template, ex, recipe.task.labels) for ex in prepared.splits[name][:n]]
        out[name] = [enc.encode(r.messages, r.completion) for r in rendered]
    return out, tok


def validation_loss(model, val, pad_id) -> float:
    import torch

    from lmtune.train.objectives import evaluate_loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return evaluate_loss(model, val, SETTINGS["batch_size"], pad_id, next(model.parameters()).device)


def run_lmtune(steps: int, checkpointing: bool, compile: bool = False) -> dict:
    import tempfile
    from pathlib import Path

    from lmtune import models
    from lmtune.methods import registry
    from lmtune.train import loop
    from lmtune.train.track import read_metrics

    data, tok = encoded_data()
    model, _, _ = models.load_causal_lm(SETTINGS["model"])
    import torch
    torch.manual_seed(SETTINGS["seed"])
    model = registry.get("lora").apply(model, SETTINGS["lora"], {})
    settings = loop.Settings(learning_rate=SETTINGS["learning_rate"], batch_size=SETTINGS["batch_size"],
                             max_steps=steps,
                             warmup_ratio=0.05, scheduler="cosine", eval_every=None, log_every=5, seed=SETTINGS["seed"],
                             precision="bf16", max_grad_norm=1.0,
                             gradient_checkpointing=checkpointing, compile=compile)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = loop.train(model, data["train"], [], settings, Path(tmp), tok.pad_token_id, quiet=True)
        seconds = time.perf_counter() - started
        losses = [m["loss"] for m in read_metrics(Path(tmp) / "metrics.jsonl") if m["split"] == "train"]
    return {"seconds": seconds, "tokens": result.train_tokens, "final_loss": losses[-1],
            "val_loss": validation_loss(model, data["validation"], tok.pad_token_id)}


def run_trl(steps: int, checkpointing: bool, compile: bool = False) -> dict:
    import tempfile

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from lmtune import models
    from lmtune.train.batches import MicroBatches

    data, tok = encoded_data()
    model, _, _ = models.load_causal_lm(SETTINGS["model"])
    # The very batches lmtune trains on, in its order; TRL reads them sequentially.
    batches = MicroBatches(len(data["train"]), SETTINGS["batch_size"], SETTINGS["seed"], 1,
                           [len(e.input_ids) for e in data["train"]])
    order = [i for m in range(steps) for i in batches.indices(m)]
    train = Dataset.from_list([{"input_ids": data["train"][i].input_ids, "labels": data["train"][i].labels}
                               for i in order])
    with tempfile.TemporaryDirectory() as tmp:
        config = SFTConfig(output_dir=tmp, max_steps=steps, per_device_train_batch_size=SETTINGS["batch_size"],
                           gradient_accumulation_steps=1, learning_rate=SETTINGS["learning_rate"],
                           lr_scheduler_type="cosine", warmup_steps=max(1, round(0.05 * steps)), logging_steps=5,
                           save_strategy="no", report_to="none", bf16=True, use_cpu=True, seed=SETTINGS["seed"],
                           max_length=SETTINGS["max_length"], dataloader_num_workers=0, max_grad_norm=1.0,
                           disable_tqdm=True, train_sampling_strategy="sequential",
                           gradient_checkpointing=checkpointing, torch_compile=compile)
        torch.manual_seed(SETTINGS["seed"])
        lora = LoraConfig(task_type="CAUSAL_LM", **SETTINGS["lora"])
        trainer = SFTTrainer(model=model, args=config, train_dataset=train, processing_class=tok, peft_config=lora)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    counted = [h["num_tokens"] for h in history if "num_tokens" in h]
    return {"seconds": seconds, "tokens": counted[-1] if counted else None, "final_loss": losses[-1],
            "val_loss": validation_loss(trainer.model, data["validation"], tok.pad_token_id)}


CONFIGS = {"checkpointing": True, "no_checkpointing": False}  # gradient checkpointing on both sides, or off


def child(which: str, steps: int, config: str, compile: bool) -> None:
    result = (run_trl if which == "trl" else run_lmtune)(steps, CONFIGS[config], compile)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def measure(which: str, steps: int, config: str, compile: bool) -> dict:
    print(f"running {which} ({config}{', compiled' if compile else ''}) for {steps} steps ...",
          file=sys.stderr, flush=True)
    cmd = [sys.executable, __file__, "--child", which, "--steps", str(steps), "--configs", config]
    proc = subprocess.run(cmd + (["--compile"] if compile else []), capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.exit(f"{which} run failed:\n{proc.stderr[-3000:]}")
    r = json.loads(line[len("RESULT "):])
    r["tokens_per_s"] = r["tokens"] / r["seconds"]
    print(f"{which:>6}: {r['seconds']:.1f} s, {r['tokens_per_s']:.0f} tokens/s, peak RSS {r['peak_rss_mb']:.0f} MB, "
          f"final train loss {r['final_loss']:.4f}, validation loss {r['val_loss']:.4f}", file=sys.stderr)
    return r


def ratios(lm: dict, trl_r: dict) -> dict:
    return {"tokens_per_s_ratio": round(lm["tokens_per_s"] / trl_r["tokens_per_s"], 3),
            "peak_rss_ratio": round(lm["peak_rss_mb"] / trl_r["peak_rss_mb"], 3),
            "final_loss_ratio": round(lm["final_loss"] / trl_r["final_loss"], 3),
            "val_loss_ratio": round(lm["val_loss"] / trl_r["val_loss"], 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated, from: " + ", ".join(CONFIGS))
    parser.add_argument("--compile", action="store_true", help="torch.compile on both sides")
    parser.add_argument("--child", choices=["trl", "lmtune"])
    args = parser.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        sys.exit(f"error: --configs: unknown {unknown}; choose from {list(CONFIGS)}")
    if args.child:
        child(args.child, args.steps, configs[0], args.compile)
        return
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit("vs_trl.py needs trl: pip install -r benchmarks/requirements.txt (make bench does this)")
    out: dict = {"steps": args.steps, "compile": args.compile, "configs": {}}
    for config in configs:
        trl_r = measure("trl", args.steps, config, args.compile)
        lm = measure("lmtune", args.steps, config, args.compile)
        out["configs"][config] = {"lmtune": lm, "trl": trl_r, **ratios(lm, trl_r)}
        print(f"{config}: " + json.dumps(ratios(lm, trl_r)), file=sys.stderr)
    # Headline ratios: the worst case over the matched configurations.
    rows = out["configs"].values()
    out["tokens_per_s_ratio"] = min(r["tokens_per_s_ratio"] for r in rows)
    out["peak_rss_ratio"] = max(r["peak_rss_ratio"] for r in rows)
    out["final_loss_ratio"] = max((r["final_loss_ratio"] for r in rows), key=lambda x: abs(x - 1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
