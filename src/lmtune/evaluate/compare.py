"""``lmtune compare RUN_DIR...``: several runs side by side in one self-contained HTML page.

Each run's ``eval.json`` gives its systems' task metric, confidence interval, cost and latency;
the page puts every (run, system) pair in one table and one chart, and repeats each run's verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lmtune import atomic
from lmtune.errors import UserError
from lmtune.evaluate import html, plots
from lmtune.evaluate.metrics import PRIMARY_METRIC
from lmtune.evaluate.report import _CSS, verdict_sentences


def compare(run_dirs: list[Path], out: Path) -> Path:
    """Write the comparison page of ``run_dirs`` to ``out`` and return it."""
    runs = [_load(Path(d)) for d in run_dirs]
    metrics = {r["primary"] for r in runs}
    rows, bars = [], {}
    for run in runs:
        for system, result in run["results"].items():
            value = result.get(run["primary"])
            ci = (result.get("ci") or {}).get(run["primary"])
            rows.append([f"<th>{html.esc(run['name'])}</th>", html.cell(system), html.cell(run["model"]),
                         html.cell(run["method"]), html.cell(run["primary"]), html.cell(value),
                         html.cell(f"{ci[0]:.4g} to {ci[1]:.4g}" if ci else None),
                         html.cell(result.get("cost_per_1k_queries")), html.cell(result.get("latency_s"))])
            if html.is_number(value):
                bars[f"{run['name']} / {system}"] = float(value)
    parts = [f"<h1>Comparison of {len(runs)} runs</h1>",
             html.table(["run", "system", "model", "method", "metric", "value", "95% CI", "cost / 1k queries",
                         "latency s"], rows)]
    if bars and len(metrics) == 1:
        parts.append(html.img(plots.metric_bars(bars, metrics.pop()), "metric per run and system"))
    for run in runs:
        sentences = verdict_sentences(run["evaluation"], run["primary"])
        parts.append(f"<h2>{html.esc(run['name'])}</h2><p class=\"summary\">{html.esc(' '.join(sentences))}</p>"
                     f"<p class=\"meta\">{html.esc(str(run['directory']))}</p>")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>lmtune comparison</title>'
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")
    atomic.write_text(Path(out), page)
    return Path(out)


def _load(directory: Path) -> dict:
    path = directory / "eval.json"
    if not path.is_file():
        raise UserError("no eval.json: not an evaluated lmtune run directory", source=str(directory))
    try:
        evaluation = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"eval.json is not valid JSON ({exc.msg})", source=f"{path}:{exc.lineno}") from None
    recipe = {}
    if (directory / "recipe.yaml").is_file():
        recipe = yaml.safe_load((directory / "recipe.yaml").read_text()) or {}
    task = evaluation.get("task")
    return {"directory": directory, "name": recipe.get("name") or directory.name, "evaluation": evaluation,
            "model": recipe.get("model"), "method": html.lookup(recipe, "method.name"),
            "primary": evaluation.get("primary_metric") or PRIMARY_METRIC.get(task or "", "loss"),
            "results": {k: v for k, v in (evaluation.get("results") or {}).items() if isinstance(v, dict)}}
