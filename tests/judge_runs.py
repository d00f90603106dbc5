"""A real, tiny generation run for the judging tests: LoRA on the tiny model for 4 steps, evaluated as ``zero_shot``
and ``finetuned`` on its test split, so the two systems' outputs differ (the tuned adapter moves the greedy tokens).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import TASK_LABELS, TASK_TOPICS, sentiment_records, write_jsonl

from lmtune.run_dir import RunDir

SYSTEMS = ("zero_shot", "finetuned")


def generation_run(root: Path, model_dir: Path, name: str = "gen", n: int = 30, prompt_suffix: str = "") -> Path:
    """Train and evaluate ``root/runs/<name>``: ``n`` records, 30% of them the test split (9 of 30, 6 of 20);
    ``prompt_suffix`` is appended to every prompt (hostile text for the escaping tests)."""
    from lmtune.lifecycle import run_recipe
    from lmtune.recipe import recipe_from_dict

    records = [{"prompt": r["review"] + prompt_suffix,
                "completion": f"{TASK_TOPICS[r['rating']]} {TASK_LABELS[r['rating']]}"} for r in sentiment_records(n)]
    data = write_jsonl(root / f"{name}.jsonl", records)
    recipe = {"name": name, "seed": 0, "model": str(model_dir), "task": {"type": "generation"},
              "data": {"train": str(data), "split": {"validation": 0.0, "test": 0.3}},
              "method": {"name": "lora", "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
              "training": {"max_steps": 4, "batch_size": 4, "learning_rate": 0.05, "max_length": 64},
              "eval": {"systems": list(SYSTEMS), "max_new_tokens": 6}}
    run = run_recipe(recipe_from_dict(recipe), out=root / "runs" / name, quiet=True)
    a, b = (RunDir(run).read_predictions(s) for s in SYSTEMS)
    assert sum(x["prediction"] != y["prediction"] for x, y in zip(a, b)) >= 4, "the tiny run's systems agree"
    return Path(run)


def copy_run(run: Path, name: str) -> RunDir:
    """A copy of ``run`` beside it, called ``name`` (its files to be changed by the test)."""
    target = run.parent / name
    shutil.copytree(run, target)
    return RunDir(target)


def set_prediction(run: RunDir, system: str, line: int, text: str) -> None:
    """Replace the prediction on ``line`` (1-based) of ``system``'s predictions file."""
    rows = run.read_predictions(system)
    rows[line - 1]["prediction"] = text
    run.prediction(system).write_text("".join(json.dumps(r) + "\n" for r in rows))
