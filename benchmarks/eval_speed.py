"""Evaluation speed on the real model: label scoring and batched generation vs a one-at-a-time loop.

N drug-review test reviews (packaged data), each as the demo's zero-shot sentiment prompt, through
SmolLM2-135M-Instruct (packaged model), three ways:

- ``classify``: ``label_scoring.classify``: no generation; one forward pass per batch over the prompts,
  the label tokens scored from the same KV cache, the prompt prefix all share encoded once.
- ``generate``: ``generation.generate``: greedy, batched with left padding and the KV cache.
- ``naive``: ``model.generate`` one prompt at a time, greedy, same ``max_new_tokens``: the loop
  most evaluation scripts write, and the baseline of both speed-ups.

It also times ``bootstrap.confidence_intervals`` over every generation metric (ROUGE-1/2/L/Lsum,
BLEU, chrF, METEOR, exact match) with 1000 resamples of 400 examples (references: the first 30
words of 400 training reviews; predictions: those of the next review), WordNet loading included, and
reports how many batched completions equal the one-at-a-time ones (left padding can move
float rounding, so a greedy tie may break differently) and how often the naive answer starts with
the label ``classify`` picks.

Many labels (``--part many``): 20 Banking77 intents (seeded pick of the 77; ``../shared/data/banking77``,
which it says it skips without), ``--many-n`` test queries stratified over them, scored zero-shot and
few-shot with k=20 (one solved query per intent in the prompt) at ``eval.batch_size`` 8 under the
default memory budget: examples/s, and the peak resident memory of each pass (the process's
high-water mark, reset before each; the model's own weights included) and its rise over the
resident memory before it. Targets: few-shot's peak within 1.5x of zero-shot's and at least a
third of its examples/s.

Prints one JSON object as its last line.
Usage: python benchmarks/eval_speed.py [--part all|three|many] [--n 64] [--batch-size 8] [--max-new-tokens 16]
       [--many-n 60] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

import torch

from lmtune.assets import dataset_path
from lmtune.data.encode import Encoder
from lmtune.data.formats import Example
from lmtune.data.templates import TEMPLATES, render
from lmtune.evaluate import bootstrap
from lmtune.inference.generation import generate
from lmtune.inference.label_scoring import classify, common_prefix_length
from lmtune.models import load_causal_lm

MODEL = "smollm2-135m-instruct"
LABELS = ["negative", "neutral", "positive"]
BANKING77 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "banking77"


def prompts(encoder: Encoder, n: int) -> tuple[list[list[int]], list[str]]:
    """The first ``n`` test reviews as zero-shot sentiment prompts, and their labels."""
    with open(dataset_path("drug-reviews", "test")) as fh:
        records = [json.loads(line) for line, _ in zip(fh, range(n))]
    examples = [Example({"text": r["review"], "label": r["rating"]}, f"test:{i}", "classification")
                for i, r in enumerate(records)]
    rendered = [render(TEMPLATES["sentiment"], ex, LABELS) for ex in examples]
    return [encoder.prompt_ids(r.messages) for r in rendered], [r.completion for r in rendered]


def bootstrap_seconds(n: int = 400, n_resamples: int = 1000) -> float:
    """Wall time of all generation metrics with bootstrap intervals on ``n`` text pairs."""
    with open(dataset_path("drug-reviews", "train")) as fh:  # 600 reviews; test has 379
        texts = [" ".join(json.loads(line)["review"].split()[:30]) for line, _ in zip(fh, range(n + 1))]
    _, seconds = timed(lambda: bootstrap.confidence_intervals("generation", texts[:n], texts[1:n + 1],
                                                              n_resamples=n_resamples))
    return seconds


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


@torch.no_grad()
def naive_generate(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int) -> list[str]:
    """``model.generate`` on one prompt at a time: no padding, no batching."""
    device = next(model.parameters()).device
    texts = []
    for ids in prompt_ids:
        out = model.generate(input_ids=torch.tensor([ids], device=device), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        texts.append(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip())
    return texts


def resident_kb(field: str = "VmHWM") -> int:
    """This process's resident memory (VmRSS) or its high-water mark since the last reset (VmHWM), in kB."""
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def measured(fn) -> tuple[object, float, dict]:
    """``fn()``, its seconds, and its peak resident memory (high-water mark reset first) and rise, in MB."""
    Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current VmRSS
    before = resident_kb("VmRSS")
    result, seconds = timed(fn)
    peak = resident_kb()
    return result, seconds, {"peak_rss_mb": round(peak / 1024), "rise_mb": round((peak - before) / 1024)}


def banking77(n: int, seed: int = 0) -> tuple[list[str], list[Example], list[Example]]:
    """20 intents, every train query of them, and ``n`` test queries stratified over them."""
    from lmtune.data.sample import sample_examples

    labels = sorted(random.Random(seed).sample(json.loads((BANKING77 / "labels.json").read_text()), 20))

    def read(split: str) -> list[Example]:
        rows = [json.loads(line) for line in (BANKING77 / f"{split}.jsonl").read_text().splitlines()]
        return [Example({"text": r["text"], "label": r["label"]}, f"{split}:{i}", "classification")
                for i, r in enumerate(rows) if r["label"] in labels]
    test = read("test")
    kept, _ = sample_examples(test, n, seed, "stratified")
    return labels, read("train"), [test[i] for i in kept]


def many_labels(model, encoder: Encoder, pad: int, n: int, batch_size: int) -> dict:
    """Zero-shot vs few-shot (k=20) label scoring over 20 Banking77 intents: examples/s and peak memory."""
    from lmtune.evaluate.systems import TaskSpec, build_prompts, few_shot_examples

    if not BANKING77.is_dir():
        print(f"many labels: skipped, {BANKING77} not found (it ships with the shared data, not with lmtune)",
              file=sys.stderr)
        return {"many_labels": {"skipped": f"{BANKING77} not found"}}
    labels, train, test = banking77(n)
    spec = TaskSpec("classification", labels, TEMPLATES["classification"], batch_size=batch_size)
    label_ids = [encoder.target_ids(label) for label in labels]
    out: dict = {"labels": 20, "n": len(test), "label_tokens": sum(map(len, label_ids))}
    classify(model, build_prompts(model, encoder, spec, test[:2])[1], label_ids, pad, 2, quiet=True)
    for name, shots in (("zero_shot", None), ("few_shot_k20", few_shot_examples(train, 20, 0, labels))):
        _, prompt_ids, _ = build_prompts(model, encoder, spec, test, shots)
        (best, _), seconds, memory = measured(lambda ids=prompt_ids: classify(model, ids, label_ids, pad, batch_size,
                                                                              quiet=True))
        accuracy = sum(labels[i] == ex.record["label"] for i, ex in zip(best, test)) / len(test)
        out[name] = {"examples_per_s": round(len(test) / seconds, 2), **memory, "accuracy": round(accuracy, 3),
                     "prompt_tokens_mean": round(sum(map(len, prompt_ids)) / len(test), 1),
                     "shared_prefix_tokens": common_prefix_length(prompt_ids)}
        print(f"{name}: {out[name]}", file=sys.stderr)
    zero, few = out["zero_shot"], out["few_shot_k20"]
    out["few_over_zero_peak_rss"] = round(few["peak_rss_mb"] / zero["peak_rss_mb"], 2)
    out["few_over_zero_examples_per_s"] = round(few["examples_per_s"] / zero["examples_per_s"], 2)
    out["targets_met"] = out["few_over_zero_peak_rss"] <= 1.5 and out["few_over_zero_examples_per_s"] >= 1 / 3
    return {"many_labels": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "three", "many"), default="all")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--many-n", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer, _ = load_causal_lm(MODEL)
    model.to(device).eval()
    encoder = Encoder(tokenizer, max_length=512)
    head = {"benchmark": "eval_speed", "model": MODEL, "device": device, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count()}
    many = many_labels(model, encoder, tokenizer.pad_token_id, args.many_n, args.batch_size) \
        if args.part != "three" else {}
    if args.part == "many":
        print(json.dumps({**head, **many, "load_avg_1m_at_end": round(os.getloadavg()[0], 2)}))
        return
    prompt_ids, _ = prompts(encoder, args.n)
    label_ids = [encoder.target_ids(label) for label in LABELS]
    pad = tokenizer.pad_token_id
    # Warm-up (allocator, kernels) on a few prompts, untimed.
    classify(model, prompt_ids[:2], label_ids, pad, 2, quiet=True)
    generate(model, tokenizer, prompt_ids[:2], 2, pad, 2, quiet=True)

    (best, _), t_classify = timed(lambda: classify(model, prompt_ids, label_ids, pad, args.batch_size, quiet=True))
    (batched, counts), t_generate = timed(lambda: generate(model, tokenizer, prompt_ids, args.max_new_tokens, pad,
                                                           args.batch_size, quiet=True))
    naive, t_naive = timed(lambda: naive_generate(model, tokenizer, prompt_ids, args.max_new_tokens))
    t_bootstrap = bootstrap_seconds()

    n = len(prompt_ids)
    rate = lambda seconds: round(n / seconds, 2)  # noqa: E731
    result = {
        **head, "load_avg_1m_at_end": round(os.getloadavg()[0], 2), "n": n,
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "prompt_tokens_mean": round(sum(map(len, prompt_ids)) / n, 1),
        "shared_prefix_tokens": common_prefix_length(prompt_ids),
        "generated_tokens_mean": round(sum(counts) / n, 1),
        "classify_examples_per_s": rate(t_classify),
        "generate_batched_examples_per_s": rate(t_generate),
        "generate_naive_examples_per_s": rate(t_naive),
        "classify_speedup_vs_naive": round(t_naive / t_classify, 2),
        "generate_speedup_vs_naive": round(t_naive / t_generate, 2),
        "batched_equals_naive": round(sum(a == b for a, b in zip(batched, naive)) / n, 3),
        "naive_answer_starts_with_classify_label": round(
            sum(text.lower().startswith(LABELS[i]) for text, i in zip(naive, best)) / n, 3),
        "bootstrap_generation_metrics_400x1000_s": round(t_bootstrap, 2), **many,
    }
    print(f"classify {t_classify:.1f} s, batched generate {t_generate:.1f} s, naive generate {t_naive:.1f} s "
          f"for {n} prompts", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
