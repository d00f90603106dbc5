import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from tiny import build_model, build_tokenizer, save_tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# The tests that start several training processes (torchrun on gloo), by node id or its beginning. Under
# pytest-xdist (`make test`) they are one unit of work: they run one after another on one worker, since two at
# once would put four busy processes on two cores, and they come first, as the longest share of the suite.
TRAINING_PROCESSES = ("tests/train/test_parallel.py::", "tests/train/test_fsdp.py::", "tests/train/test_zero.py::",
                      "tests/train/test_distill.py::test_two_processes_distil_on_the_blocks_of_one_and_log_its_kl")


def xdist_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: the training-process tests are one, any other test goes with its
    module, so a module's tests run in order on one worker as without xdist (module fixtures are built once, and
    test_judge_browser's results test reads what its judging test did)."""
    return "training-processes" if nodeid.startswith(TRAINING_PROCESSES) else nodeid.split("::")[0]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadscope`` (``make test``), pytest-xdist's scope scheduling over ``xdist_unit`` (its
    ``xdist_group`` marks are lost under pytest 9: they rename ``item._nodeid``, which pytest 9 no longer reads).
    Any other ``--dist`` a developer asks for is xdist's own (None: the next implementation decides)."""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_unit(nodeid)

    return ByUnit(config, log)


def pytest_collection_modifyitems(items):
    """The training-process tests first (a stable sort; ``make test`` keeps this order: --no-loadscope-reorder)."""
    items.sort(key=lambda item: xdist_unit(item.nodeid) != "training-processes")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="module")
def tok():
    """The tiny tokenizer (``tiny.build_tokenizer``), built once per test module."""
    return build_tokenizer()


@pytest.fixture(scope="module")
def setup():
    """``(tokenizer, model, encoder)``: the tiny Llama (seed 1, eval mode) and an encoder of 128 tokens."""
    from lmtune.data.encode import Encoder

    tok = build_tokenizer()
    model = build_model(len(tok), seed=1).eval()
    return tok, model, Encoder(tok, 128)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads; on shared, busy cores the threads' spin-waits
    made a module of them 20x slower (180 s instead of 8 s). Module-scoped, so it also covers the
    module-scoped fixtures that train: request it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# What a finished ``lmtune train`` leaves in its run directory.
RUN_FILES = ["recipe.yaml", "manifest.json", "status.json", "data", "metrics.jsonl", "timing.jsonl", "final",
             "eval.json", "predictions", "report.html"]


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


def write_recipe(path: Path, model_dir: Path, train_file: Path, **sections) -> Path:
    """Write a small classification recipe on the tiny model to ``path``; extra keys merge in."""
    import yaml

    recipe = {
        "name": "tiny", "seed": 0, "model": str(model_dir),
        "task": {"type": "classification", "labels": ["negative", "neutral", "positive"],
                 "template": "sentiment"},
        "data": {"train": str(train_file), "fields": {"text": "review", "label": "rating"},
                 "split": {"validation": 0.2, "test": 0.2}},
        "method": {"name": "lora", "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
        "training": {"max_steps": 4, "batch_size": 4, "learning_rate": 1e-2, "eval_every": 2,
                     "log_every": 1, "max_length": 64},
        "eval": {"systems": ["zero_shot", "few_shot", "finetuned"], "few_shot_k": 2},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture
def recipe_file(tmp_path, tiny_model_dir, sentiment_file):
    """Write a small classification recipe on the tiny model (``write_recipe``); extra keys merge in."""
    def make(**sections):
        return write_recipe(tmp_path / "recipe.yaml", tiny_model_dir, sentiment_file, **sections)
    return make


# Runs served as trained (tests/serve/test_serve_task.py) and predicted from (tests/test_predict_file.py).
# Two tokens each for the tiny tokenizer ("negative" and "neutral" would share their first two).
TASK_LABELS = {"negative": "awful", "neutral": "fine", "positive": "great"}
TASK_TOPICS = {"negative": "complaint", "neutral": "note", "positive": "praise"}


def train_task_run(out, model_dir, records, task: dict, steps: int, lr: float, **sections):
    from lmtune.lifecycle import run_recipe
    from lmtune.recipe import recipe_from_dict

    recipe = {"name": out.name, "seed": 0, "model": str(model_dir), "task": task,
              "data": {"train": str(records), "split": {"validation": 0.0, "test": 0.3}, **sections.pop("data", {})},
              "method": {"name": "lora", "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
              # fp32 as the task server serves it: evaluation and serving then agree to float rounding
              "training": {"max_steps": steps, "batch_size": 4, "learning_rate": lr, "max_length": 128,
                           "precision": "fp32"},
              "eval": {"systems": ["finetuned"], **sections.pop("eval", {})}}
    return run_recipe(recipe_from_dict(recipe), out=out, quiet=True)


@pytest.fixture(scope="session")
def task_runs(tmp_path_factory, tiny_model_dir):
    """Two runs to serve as trained (``<run>:task``): ``reviews`` (classification by label scoring) and ``notes``
    (generation with a template field), LoRA on the tiny model in fp32."""
    root = tmp_path_factory.mktemp("task-runs")
    reviews = write_jsonl(root / "reviews.jsonl",
                          [{**r, "rating": TASK_LABELS[r["rating"]]} for r in sentiment_records()])
    notes = write_jsonl(root / "notes.jsonl", [{"prompt": r["review"], "topic": TASK_TOPICS[r["rating"]],
                                                "completion": TASK_LABELS[r["rating"]]} for r in sentiment_records(20)])
    template = {"system": "You answer in one word.", "prompt": "Topic: {topic}\n\n{prompt}"}
    return {
        # 60 steps at a high rate: the tiny model's predictions differ between inputs (asserted in the tests; at 40
        # steps they were one label for all on another CPU with 2 threads)
        "reviews": train_task_run(root / "reviews", tiny_model_dir, reviews,
                                  {"type": "classification", "labels": sorted(TASK_LABELS.values()),
                                   "template": "classification"},
                                  60, 0.1, data={"fields": {"text": "review", "label": "rating"}}),
        "notes": train_task_run(root / "notes", tiny_model_dir, notes, {"type": "generation", "template": template},
                                4, 0.05, eval={"max_new_tokens": 6}),
    }


def evaluated(run) -> list[tuple[dict, dict]]:
    """(test record, its line of predictions/finetuned.jsonl) pairs: the inputs and what evaluation answered."""
    test = [json.loads(line) for line in (run / "data" / "test.jsonl").read_text().splitlines()]
    predicted = [json.loads(line) for line in (run / "predictions" / "finetuned.jsonl").read_text().splitlines()]
    assert len(test) == len(predicted) == json.loads((run / "eval.json").read_text())["n"]
    return list(zip(test, predicted))


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if a model is loaded: the recipes of such a test must be refused before that."""
    from lmtune import models

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the recipe was refused")

    monkeypatch.setattr(models, "load_causal_lm", refuse)
    monkeypatch.setattr(models, "load_sequence_classifier", refuse)


def refused_train(recipe, out) -> str:
    """``lmtune train recipe``'s one error line; asserts exit 2, no traceback and no run directory left."""
    code, output = run_cli("train", recipe, "--out", out, "--quiet")
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in output, output
    assert not out.exists()
    return lines[0]


def killed_cli(args, ready, timeout: float = 240.0) -> str:
    """Run ``lmtune *args`` in a process of its own and SIGKILL it as soon as ``ready(lines printed so far)`` is
    true (the kill-and-resume tests); returns what it printed. Fails if it ends or ``timeout`` passes first."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmtune.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    seen: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            seen.append(line)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while not ready(seen):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(seen)
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    return "".join(seen)
