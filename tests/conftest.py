import json
import os
from pathlib import Path

import pytest
from tiny import save_tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-model"))


# What a finished ``lmtune train`` leaves in its run directory.
RUN_FILES = ["recipe.yaml", "manifest.json", "data", "metrics.jsonl", "timing.jsonl", "final", "eval.json",
             "predictions", "report.html"]


def run_cli(*args) -> tuple[int, str]:
    """Run ``lmtune`` in this process (typer's CliRunner); return the exit code and stdout + stderr."""
    from typer.testing import CliRunner

    from lmtune.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout + (result.stderr or "")


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def sentiment_records(n: int = 60):
    texts = {"positive": ["the movie was great and i loved it", "this drug helped my pain a lot"],
             "negative": ["the movie was terrible and boring", "this drug gave me awful side effects"],
             "neutral": ["it was fine, nothing special"]}
    out = []
    for i in range(n):
        label = ["positive", "negative", "neutral"][i % 3]
        base = texts[label][i % len(texts[label])]
        out.append({"review": f"{base} #{i}", "rating": label})
    return out


@pytest.fixture
def sentiment_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "reviews.jsonl", sentiment_records())


@pytest.fixture
def recipe_file(tmp_path, tiny_model_dir, sentiment_file):
    """Write a small classification recipe on the tiny model; extra keys merge in."""
    import yaml

    def make(**sections):
        recipe = {
            "name": "tiny", "seed": 0, "model": str(tiny_model_dir),
            "task": {"type": "classification", "labels": ["negative", "neutral", "positive"],
                     "template": "sentiment"},
            "data": {"train": str(sentiment_file), "fields": {"text": "review", "label": "rating"},
                     "split": {"validation": 0.2, "test": 0.2}},
            "method": {"name": "lora", "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
            "training": {"max_steps": 4, "batch_size": 4, "learning_rate": 1e-2, "eval_every": 2,
                         "log_every": 1, "max_length": 64},
            "eval": {"systems": ["zero_shot", "few_shot", "finetuned"], "few_shot_k": 2},
        }
        for key, value in sections.items():
            recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return path
    return make
