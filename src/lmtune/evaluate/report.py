"""The run report: one self-contained HTML page built from the files of a run directory.

The page embeds its figures as PNG ``data:`` URIs and its styling inline, so it can be mailed,
attached to a ticket or opened from an air-gapped machine. Every input file is optional except
that one of ``recipe.yaml`` or ``eval.json`` must exist; a section whose file is missing is left
out and a file that cannot be parsed gets a visible note instead of failing the whole report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmtune import atomic
from lmtune.errors import UserError
from lmtune.evaluate import html, plots
from lmtune.evaluate.metrics import PRIMARY_METRIC, best_systems, higher_is_better

_EXAMPLES = 8
_INPUT_CHARS = 300
_VALIDATION_SPLITS = ("validation", "val", "eval")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
 max-width:1150px;padding:0 1rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
.meta{color:#555}.note{color:#8a5a00;background:#fff8e6;padding:.3rem .6rem;border-radius:4px}
.summary{font-size:1.08rem;background:#eef4fb;padding:.5rem .8rem;border-radius:4px}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv table.kv{margin:0}table.examples td{max-width:320px;white-space:pre-wrap;
 overflow-wrap:anywhere}table.examples td:first-child{min-width:240px}img{max-width:100%;height:auto}
.row{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}
details{margin:.6rem 0}pre{background:#f7f7f7;padding:.6rem;overflow-x:auto;font-size:.85rem}
"""


@dataclass
class _Run:
    """Everything the report reads from a run directory, already parsed."""

    directory: Path
    recipe: dict = field(default_factory=dict)
    recipe_text: str | None = None
    manifest: dict | None = None
    metrics: list[dict] = field(default_factory=list)
    timing: list[dict] = field(default_factory=list)
    evaluation: dict | None = None
    data_report: dict | None = None
    notes: list[str] = field(default_factory=list)
    task: str | None = None


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` from whatever the run directory holds.

    Args:
        run_dir: a run directory (see "Run directory" in README.md).

    Returns:
        The path of the written report.

    Raises:
        UserError: the directory has neither ``recipe.yaml`` nor ``eval.json``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file() and not (run_dir / "eval.json").is_file():
        raise UserError("no recipe.yaml or eval.json found; pass a run directory written by "
                        "`lmtune train` or `lmtune eval`", source=str(run_dir))
    page = _render(_load(run_dir))
    target = run_dir / "report.html"
    atomic.write_text(target, page)
    return target


def _render(run: _Run) -> str:
    name = str(run.recipe.get("name") or run.directory.name)
    sections = [_header(run, name), _verdict(run), _systems(run), _forgetting(run), _bias(run), _details(run),
                _training(run), _data(run), _environment(run)]
    notes = "".join(f'<p class="note">{html.esc(n)}</p>' for n in run.notes)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.esc(name)}</title><style>{_CSS}</style></head><body>"
            f"{notes}{''.join(s for s in sections if s)}</body></html>\n")


# --- loading -------------------------------------------------------------------------------


def _load(run_dir: Path) -> _Run:
    run = _Run(directory=run_dir)
    recipe_path = run_dir / "recipe.yaml"
    if recipe_path.is_file():
        run.recipe_text = recipe_path.read_text(encoding="utf-8", errors="replace")
        try:
            parsed = yaml.safe_load(run.recipe_text)
            run.recipe = parsed if isinstance(parsed, dict) else {}
        except yaml.YAMLError as exc:
            run.notes.append(f"recipe.yaml could not be parsed: {exc}")
    run.manifest = _read_json(run_dir / "manifest.json", run.notes)
    run.evaluation = _read_json(run_dir / "eval.json", run.notes)
    run.data_report = _read_json(run_dir / "data" / "data_report.json", run.notes)
    run.metrics = _read_jsonl(run_dir / "metrics.jsonl", run.notes)
    run.timing = _read_jsonl(run_dir / "timing.jsonl", run.notes) if (run_dir / "timing.jsonl").exists() else []
    run.task = (run.evaluation or {}).get("task") or html.lookup(run.recipe, "task.type")
    return run


def _read_json(path: Path, notes: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(value, dict):
            return value
        problem = "it is not a JSON object"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problem = str(exc)
    notes.append(f"{path.name} could not be parsed and is left out: {problem}")
    return None


def _read_jsonl(path: Path, notes: list[str], limit: int | None = None) -> list[dict]:
    if not path.is_file():
        return []
    rows, bad = [], 0
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
    if bad:  # a run killed mid-write leaves a torn last line; show the rest, but say so
        notes.append(f"{path.name}: skipped {bad} line(s) that are not valid JSON")
    return rows


# --- sections ------------------------------------------------------------------------------


def _header(run: _Run, name: str) -> str:
    # The origin says what the weights really are, e.g. a dequantized Q4_1 GGUF rather than the
    # original full-precision model, which the baselines' numbers depend on.
    facts = {"model": run.recipe.get("model"), "model origin": html.lookup(run.manifest or {}, "model.origin"),
             "task": run.task,
             "method": html.lookup(run.recipe, "method.name"),
             "test examples": (run.evaluation or {}).get("n")}
    line = " · ".join(f"{k}: <strong>{html.esc(html.fmt(v))}</strong>"
                      for k, v in facts.items() if v is not None)
    recipe = ""
    if run.recipe_text is not None:
        recipe = f"<details><summary>Recipe</summary><pre>{html.esc(run.recipe_text)}</pre></details>"
    return f'<header><h1>{html.esc(name)}</h1><p class="meta">{line}</p>{recipe}</header>'


def _results(run: _Run) -> dict[str, dict]:
    results = (run.evaluation or {}).get("results")
    if not isinstance(results, dict):
        return {}
    return {str(k): v for k, v in results.items() if isinstance(v, dict)}


def _primary(run: _Run, results: dict[str, dict]) -> str | None:
    candidates = [(run.evaluation or {}).get("primary_metric"), PRIMARY_METRIC.get(run.task or "")]
    for metric in candidates:
        if metric and any(html.is_number(r.get(metric)) for r in results.values()):
            return str(metric)
    return None


def summary_sentence(values: dict[str, float], metric: str) -> str:
    """One sentence that ranks systems on ``metric``, derived from the numbers.

    Args:
        values: metric value per system.
        metric: the metric's key; its direction comes from ``higher_is_better``.

    Returns:
        e.g. ``"finetuned has the highest f1_macro (0.71): +0.32 over zero_shot."``
    """
    if len(values) == 1:
        (name, value), = values.items()
        return f"{name}: {metric} = {value:.4g} (the only system evaluated)."
    winners = best_systems(values, metric)
    top = values[winners[0]]
    word = "highest" if higher_is_better(metric) else "lowest"
    who = (f"{winners[0]} has" if len(winners) == 1
           else f"{', '.join(winners[:-1])} and {winners[-1]} tie for")
    link = "over" if higher_is_better(metric) else "vs"
    others = [f"{top - v:+.4g} {link} {name}" for name, v in values.items() if name not in winners]
    return f"{who} the {word} {metric} ({top:.4g})" + (f": {', '.join(others)}." if others else ".")


def verdict_sentences(evaluation: dict, metric: str) -> list[str]:
    """Which system wins on ``metric``, whether that is significant, and what it costs, in plain words."""
    results = {k: v for k, v in (evaluation.get("results") or {}).items() if isinstance(v, dict)}
    values = {s: float(r[metric]) for s, r in results.items() if html.is_number(r.get(metric))}
    if not values:
        return []
    winners = best_systems(values, metric)
    winner = winners[0]
    w = results[winner]
    ci = (w.get("ci") or {}).get(metric)
    out = [f"{winner} wins on {metric}: {values[winner]:.4g}"
           + (f" (95% CI {ci[0]:.4g} to {ci[1]:.4g})." if ci else ".")]
    rest = {k: v for k, v in values.items() if k != winner}
    if rest:
        runner = best_systems(rest, metric)[0]
        p = _p_value(evaluation, metric, winner, runner)
        test = (f"significant (paired bootstrap p = {p:.3g})" if p is not None and p < 0.05
                else f"not significant (paired bootstrap p = {p:.3g})" if p is not None
                else "not tested for significance")
        out.append(f"Its lead over the runner-up, {runner} ({values[runner]:.4g}), is {test}.")
    if html.is_number(w.get("cost_per_1k_queries")):
        tokens = f"{w.get('prompt_tokens_mean', 0):.0f} prompt + {w.get('completion_tokens_mean', 0):.1f} completion"
        latency = f", {1000 * w['latency_s']:.0f} ms per query here" if html.is_number(w.get("latency_s")) else ""
        out.append(f"It costs {w['cost_per_1k_queries']:.4g} per 1,000 queries at the recipe's prices "
                   f"({tokens} tokens per query{latency}).")
    training = evaluation.get("training") or {}
    if winner.startswith("finetuned") and html.is_number(training.get("training_cost")):
        line = (f"Fine-tuning cost {training['training_cost']:.4g} once ({training.get('training_tokens', 0):,} "
                f"tokens, {training.get('training_wall_s', 0):.0f} s of training here)")
        prompting = {k: v for k, v in values.items() if not k.startswith("finetuned") and k != "majority"}
        if prompting:
            best_prompt = best_systems(prompting, metric)[0]
            gap = results[best_prompt].get("cost_per_1k_queries", 0) - w.get("cost_per_1k_queries", 0)
            if gap > 0:
                line += (f"; at {gap:.4g} less per 1,000 queries than {best_prompt} it pays for itself after "
                         f"{1000 * training['training_cost'] / gap:,.0f} queries")
        out.append(line + ".")
    elif any(k.startswith("finetuned") for k in values) and not winner.startswith("finetuned"):
        out.append("Fine-tuning did not beat the best alternative on this metric: keep the cheaper system.")
    return out


def _p_value(evaluation: dict, metric: str, a: str, b: str) -> float | None:
    for entry in evaluation.get("significance") or []:
        if entry.get("metric") == metric and {entry.get("a"), entry.get("b")} == {a, b}:
            return entry.get("p_value")
    return None


def _verdict(run: _Run) -> str:
    results = _results(run)
    primary = _primary(run, results)
    if not primary:
        return ""
    sentences = verdict_sentences(run.evaluation or {}, primary)
    if not sentences:
        return ""
    parts = ['<section><h2>Verdict: was fine-tuning worth it?</h2>',
             f'<p class="summary">{html.esc(" ".join(sentences))}</p><div class="row">']
    values = {s: float(r[primary]) for s, r in results.items() if html.is_number(r.get(primary))}
    intervals = {s: r["ci"][primary] for s, r in results.items() if (r.get("ci") or {}).get(primary)}
    winners = best_systems(values, primary)
    parts.append(html.img(plots.metric_bars(values, primary, winners[0] if len(winners) == 1 else None,
                                            intervals or None), f"{primary} per system with 95% intervals"))
    points = {s: (float(r["cost_per_1k_queries"]), float(r[primary])) for s, r in results.items()
              if html.is_number(r.get("cost_per_1k_queries")) and html.is_number(r.get(primary))}
    if len(points) > 1:
        parts.append(html.img(plots.cost_quality(points, primary, "cost per 1,000 queries"), "cost vs quality"))
    return "".join(parts) + "</div></section>"


def _forgetting(run: _Run) -> str:
    change = ((run.evaluation or {}).get("forgetting") or {}).get("change") or {}
    if not change:
        return ""
    rows = [[f"<th>{html.esc(probe)}</th>", html.cell(c.get("metric")), html.cell(c.get("before")),
             html.cell(c.get("after")), html.cell(c.get("change")), html.cell(_interval_text(c)),
             html.cell(c.get("p_value")), html.cell("yes" if c.get("forgot") else "no")]
            for probe, c in change.items()]
    charts = []
    # One chart per metric: perplexity in the thousands beside accuracy below 1 would flatten the accuracy bars.
    for metric in dict.fromkeys(c.get("metric") for c in change.values()):
        probes = {p: c for p, c in change.items() if c.get("metric") == metric}
        series = {"base": {p: float(c["before"]) for p, c in probes.items() if html.is_number(c.get("before"))},
                  "fine-tuned": {p: float(c["after"]) for p, c in probes.items() if html.is_number(c.get("after"))}}
        charts.append(html.img(plots.grouped_bars(series, f"general-ability probes: {metric}", str(metric)),
                               f"forgetting: {metric}"))
    return ("<section><h2>Forgetting: general ability before and after</h2>"
            + html.table(["probe", "metric", "base", "fine-tuned", "change", "95% CI of change", "p", "forgot"], rows)
            + '<div class="row">' + "".join(charts) + "</div></section>")


def _interval_text(c: dict) -> str | None:
    """``low to high`` of a paired interval, None when the result has none."""
    if not (html.is_number(c.get("ci_low")) and html.is_number(c.get("ci_high"))):
        return None
    return f"{c['ci_low']:.4g} to {c['ci_high']:.4g}"


def _bias(run: _Run) -> str:
    bias = (run.evaluation or {}).get("bias") or {}
    if not bias:
        return ""
    rows = []
    for system, r in bias.items():
        gap = r.get("metric_gap") or {}
        rows.append([f"<th>{html.esc(system)}</th>", html.cell(r.get("n_tested")), html.cell(r.get("flip_rate")),
                     html.cell(gap.get("metric")), html.cell(" vs ".join(map(str, gap.get("groups") or []))),
                     html.cell(gap.get("gap"))])
    return ("<section><h2>Bias check: counterfactual term swaps</h2>"
            + html.table(["system", "inputs with terms", "prediction flip rate", "metric", "groups", "gap"], rows)
            + "</section>")


def _systems(run: _Run) -> str:
    results = _results(run)
    if not results:
        return ""
    primary = _primary(run, results)
    # Nested values (confusion matrix, per-class scores) get their own sections below.
    columns = list(dict.fromkeys(k for r in results.values() for k, v in r.items()
                                 if not isinstance(v, (dict, list))))
    if primary:
        columns = [primary] + [c for c in columns if c != primary]
    values = {s: float(r[primary]) for s, r in results.items() if primary and html.is_number(r.get(primary))}
    winners = best_systems(values, primary) if values else []
    rows = [[f"<th>{html.esc(system)}</th>"]
            + [html.cell(r.get(c), bold=(c == primary and system in winners)) for c in columns]
            for system, r in results.items()]
    parts = ["<section><h2>Systems side by side</h2>"]
    if values:
        parts.append(f'<p class="summary">{html.esc(summary_sentence(values, primary))}</p>')
    parts.append(html.table(["system"] + columns, rows))
    if values:
        parts.append(html.img(plots.metric_bars(values, primary, winners[0] if len(winners) == 1 else None),
                          f"{primary} per system"))
    return "".join(parts) + "</section>"


def _details(run: _Run) -> str:
    if run.task == "classification":
        return _classification_details(run)
    return _examples(run)


def _classification_details(run: _Run) -> str:
    default = (run.evaluation or {}).get("labels") or html.lookup(run.recipe, "task.labels")
    matrices = {}
    for system, result in _results(run).items():
        matrix = result.get("confusion_matrix")
        square = isinstance(matrix, list) and matrix and all(
            isinstance(row, list) and len(row) == len(matrix) and all(map(html.is_number, row))
            for row in matrix)
        if square:
            labels = result.get("labels") or default
            names = labels if labels and len(labels) == len(matrix) else range(len(matrix))
            matrices[system] = (matrix, [str(name) for name in names])
    if not matrices:
        return ""
    # One colour scale for all systems, so equal shades mean equal counts across the row.
    vmax = max(max(max(row) for row in matrix) for matrix, _ in matrices.values())
    images = "".join(html.img(plots.confusion_heatmap(matrix, labels, system, vmax),
                          f"confusion matrix of {system}")
                     for system, (matrix, labels) in matrices.items())
    return ('<section><h2>Confusion matrices</h2><p class="meta">rows: true label, columns: '
            f'predicted label</p><div class="row">{images}</div></section>')


def _examples(run: _Run) -> str:
    folder = run.directory / "predictions"
    if not folder.is_dir():
        return ""
    names = list(_results(run)) + sorted(p.stem for p in folder.glob("*.jsonl"))
    systems = {s: _read_jsonl(folder / f"{s}.jsonl", run.notes, limit=_EXAMPLES)
               for s in dict.fromkeys(names) if (folder / f"{s}.jsonl").is_file()}
    systems = {s: rows for s, rows in systems.items() if rows}
    if not systems:
        return ""
    first = next(iter(systems.values()))
    rows = []
    for i, example in enumerate(first[:_EXAMPLES]):
        cells = [_text_cell(example.get("input"), _INPUT_CHARS), _text_cell(example.get("reference"))]
        cells += [_text_cell(lines[i].get("prediction") if i < len(lines) else None)
                  for lines in systems.values()]
        rows.append(cells)
    return (f"<section><h2>Examples</h2><p class=\"meta\">first {len(rows)} test examples</p>"
            f"{html.table(['input', 'reference'] + list(systems), rows, 'examples')}</section>")


def _text_cell(value: Any, limit: int = html.TEXT_CHARS) -> str:
    # Chat inputs may be message lists; show them as JSON rather than Python reprs.
    text = value if isinstance(value, str) or value is None else json.dumps(value, ensure_ascii=False)
    return f"<td>{html.esc(html.fmt(text, limit))}</td>"


def _training(run: _Run) -> str:
    numeric = [r for r in run.metrics if html.is_number(r.get("step"))]
    train = [r for r in numeric if r.get("split") == "train"]
    val = [r for r in numeric if r.get("split") in _VALIDATION_SPLITS]
    train_loss = [(r["step"], r["loss"]) for r in train if html.is_number(r.get("loss"))]
    val_loss = [(r["step"], r["loss"]) for r in val if html.is_number(r.get("loss"))]
    lr = [(r["step"], r["lr"]) for r in train if html.is_number(r.get("lr"))]
    # The loop may log a closing "summary" line; the lifecycle also puts one in eval.json.
    summaries = [{k: v for k, v in r.items() if k != "split"}
                 for r in run.metrics if r.get("split") == "summary"]
    summary = (run.evaluation or {}).get("training") or (summaries[-1] if summaries else None)
    if not (train_loss or val_loss or summary):
        return ""
    facts = []
    if train_loss:
        facts.append(f"final train loss {train_loss[-1][1]:.4g} (step {train_loss[-1][0]})")
    if val_loss:
        step, loss = min(val_loss, key=lambda point: point[1])
        facts.append(f"best validation loss {loss:.4g} at step {step}")
    # timing.jsonl; runs written before it existed kept tokens_per_s in metrics.jsonl
    speeds = [r["tokens_per_s"] for r in run.timing or train if html.is_number(r.get("tokens_per_s"))]
    if speeds:
        facts.append(f"mean throughput {sum(speeds) / len(speeds):.4g} tokens/s")
    parts = ["<section><h2>Training</h2>", f"<p>{html.esc('; '.join(facts))}</p>" if facts else ""]
    if train_loss or val_loss:
        parts.append(html.img(plots.loss_curves(train_loss, val_loss, lr), "loss curves"))
    if isinstance(summary, dict) and summary:
        parts.append("<h3>Run summary</h3>" + html.nested_html(summary))
    return "".join(parts) + "</section>"


def _data(run: _Run) -> str:
    report = run.data_report
    if not report:
        return ""
    rest = {k: v for k, v in report.items() if k not in ("token_lengths", "label_distribution", "steps")}
    parts = ["<section><h2>Data</h2>", _steps(report.get("steps")), html.nested_html(rest) if rest else ""]
    labels = report.get("label_distribution")
    if isinstance(labels, dict) and labels:
        groups = {s: {k: v for k, v in c.items() if html.is_number(v)}
                  for s, c in labels.items() if isinstance(c, dict)}
        parts.append("<h3>Label distribution</h3>")
        if any(groups.values()):
            parts.append(html.img(plots.grouped_bars(groups, "Label distribution"), "label distribution"))
        parts.append(html.nested_html(labels))
    lengths = report.get("token_lengths")
    if isinstance(lengths, dict):
        series = {s: [float(x) for x in v] for s, v in lengths.items()
                  if isinstance(v, list) and v and all(html.is_number(x) for x in v)}
        if series:
            max_length = html.lookup(report, "truncation.max_length") or \
                html.lookup(run.recipe, "training.max_length")
            limit = float(max_length) if html.is_number(max_length) else None
            parts.append("<h3>Token lengths</h3>" + html.img(plots.length_histogram(series, limit),
                                                          "token length histogram"))
    return "".join(parts) + "</section>"


def _steps(steps: Any) -> str:
    """What each data step left, one row per step, with what it removed or found."""
    if not isinstance(steps, list) or not steps:
        return ""
    rows = []
    for step in steps:
        if not isinstance(step, dict):
            continue
        details = {k: v for k, v in step.items() if k not in ("split", "step", "records") and v not in (0, None, [], "")}
        rows.append([html.cell(step.get("split")), html.cell(step.get("step")), html.cell(step.get("records")),
                     f"<td>{html.nested_html(details) if details else ''}</td>"])
    return "<h3>Steps</h3>" + html.table(["split", "step", "records after", "details"], rows)


def _environment(run: _Run) -> str:
    manifest = run.manifest
    if not manifest:
        return ""
    facts = {
        "python": html.lookup(manifest, "python", "versions.python", "platform.python"),
        **{pkg: html.lookup(manifest, pkg, f"packages.{pkg}", f"versions.{pkg}")
           for pkg in ("torch", "transformers", "peft")},
        "seed": html.lookup(manifest, "seed"),
        "model origin": html.lookup(manifest, "model.origin"),
        "created": html.lookup(manifest, "created", "created_at", "timestamp"),
    }
    known = {k: v for k, v in facts.items() if v is not None}
    return ("<section><h2>Environment</h2>" + html.nested_html(known)
            + "<details><summary>Full manifest</summary>" + html.nested_html(manifest)
            + "</details></section>")
