"""Run directories for the studio tests: a realistic finished run with every file a page reads, and its curves."""

from __future__ import annotations

import json
import time
from pathlib import Path

from report_runs import NASTY, make_realistic_run, write_file

from lmtune import run_status
from lmtune.run_dir import RunDir


def studio_folders(root: Path) -> tuple[Path, Path]:
    """A studio's runs folder and recipes folder, ``root/runs`` and ``root/recipes``, both made."""
    runs, recipes = root / "runs", root / "recipes"
    runs.mkdir()
    recipes.mkdir()
    return runs, recipes


def studio_run(root: Path, directory: str = "drug-reviews", name: str = "drug-review-sentiment", seed: int = 42,
               learning_rate: float = 2e-4, steps: int = 60, state: str = "finished", nasty: bool = False) -> Path:
    """A finished classification run (seven systems, intervals, predictions, data report) with ``metrics.jsonl``,
    ``timing.jsonl``, a manifest and a status; ``nasty`` puts ``<script>`` into its name and first record."""
    run = make_realistic_run(root, directory, NASTY if nasty else name, seed=seed, learning_rate=learning_rate)
    files = RunDir(run)
    write_file(files.manifest, json.dumps({"seed": seed, "packages": {"torch": "2.13.0"}}))
    lines, timing = [], []
    for step in range(5, steps + 1, 5):
        lines.append({"step": step, "epoch": round(step / steps * 2, 4), "split": "train",
                      "loss": 2.0 / (1 + step / 10), "lr": learning_rate * (1 - step / (steps + 1))})
        timing.append({"step": step, "tokens_per_s": 400.0 + step, "elapsed_s": step * 4.0})
        if step % 20 == 0:
            lines.append({"step": step, "epoch": round(step / steps * 2, 4), "split": "validation",
                          "loss": 2.2 / (1 + step / 12)})
    write_file(files.metrics, "".join(json.dumps(r) + "\n" for r in lines))
    write_file(files.timing, "".join(json.dumps(r) + "\n" for r in timing))
    if nasty:
        first = files.prediction("finetuned").read_text().splitlines()
        row = json.loads(first[0])
        row["input"] = NASTY
        files.prediction("finetuned").write_text("\n".join([json.dumps(row), *first[1:]]) + "\n")
    now = time.time()
    files.write_status({"state": state, "pid": 0, "host": "elsewhere", "started_at": now - 700,
                        "attempt_started_at": now - 700, "elapsed_before_s": 0.0, "attempts": 1,
                        "ended_at": now - 60, "elapsed_s": 640.0, "error": None})
    assert state in run_status.STATES
    files.report.write_text(f"<html><body><h1>report of {directory}</h1></body></html>")
    return run
