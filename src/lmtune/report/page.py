"""The run report: one self-contained HTML page built from the files of a run directory.

The page embeds its figures as PNG ``data:`` URIs and its styling inline, so it can be mailed,
attached to a ticket or opened from an air-gapped machine. Every input file is optional except
that one of ``recipe.yaml`` or ``eval.json`` must exist; a section whose file is missing is left
out and a file that cannot be parsed gets a visible note instead of failing the whole report.

Sections live in modules named after them: :mod:`~lmtune.report.systems` (verdict, systems),
:mod:`~lmtune.report.classes` (confusion, per-class scores, misclassified or example outputs),
:mod:`~lmtune.report.data` (the data report), :mod:`~lmtune.report.calibration` (ECE, temperature,
reliability diagrams), :mod:`~lmtune.report.self_training` (pseudo-labels, gain), :mod:`~lmtune.report.human_eval`
(blind A/B judgements, from ``human_eval.json``); this module has the rest
and puts them together.
"""

from __future__ import annotations

from pathlib import Path

from lmtune import atomic
from lmtune.errors import UserError
from lmtune.kinds import systems as system_kinds
from lmtune.recipe_model import model_name
from lmtune.report import calibration, classes, data, html, human_eval, plots, self_training, systems
from lmtune.report.run import Run, load
from lmtune.run_dir import RunDir

_VALIDATION_SPLITS = ("validation", "val", "eval")


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` from whatever the run directory holds.

    Args:
        run_dir: a run directory (see "Run directory" in README.md).

    Returns:
        The path of the written report.

    Raises:
        UserError: the directory has neither ``recipe.yaml`` nor ``eval.json``.
    """
    files = RunDir(run_dir)
    if not files.recipe.is_file() and not files.eval.is_file():
        raise UserError("no recipe.yaml or eval.json found; pass a run directory written by "
                        "`lmtune train` or `lmtune eval`", source=str(files.path))
    page = _render(load(files.path))
    atomic.write_text(files.report, page)
    return files.report


def _render(run: Run) -> str:
    sections = [_header(run), systems.verdict(run), systems.systems(run), human_eval.section(run),
                calibration.section(run), self_training.section(run), forgetting_section(run), bias_section(run),
                classes.details(run),
                _training(run), data.data(run), _environment(run)]
    return html.page(run.name, "".join(s for s in sections if s), run.notes)


# --- sections ------------------------------------------------------------------------------


def _header(run: Run) -> str:
    # The origin says what the weights really are, e.g. a dequantized Q4_1 GGUF rather than the
    # original full-precision model, which the baselines' numbers depend on.
    facts = {"model": model_name(run.recipe.get("model")),
             "model origin": html.lookup(run.manifest or {}, "model.origin"), "task": run.task,
             "method": _method(run),
             # `lmtune eval`: what answered (a run's final/ for the fine-tuned systems, else a model); nothing trained
             "evaluated": html.lookup(run.evaluation or {}, "evaluated.final", "evaluated.ref"),
             "test examples": (run.evaluation or {}).get("n")}
    line = " · ".join(f"{k}: <strong>{html.esc(html.fmt(v))}</strong>"
                      for k, v in facts.items() if v is not None)
    recipe = ""
    if run.recipe_text is not None:
        recipe = f"<details><summary>Recipe</summary><pre>{html.esc(run.recipe_text)}</pre></details>"
    return f'<header><h1>{html.esc(run.name)}</h1><p class="meta">{line}</p>{recipe}</header>'


def _method(run: Run) -> str | None:
    """The recipe's method, unless no system was fine-tuned (a baselines-only run trains nothing)."""
    if run.results and not any(system_kinds.is_trained(s) for s in run.results):
        return "none (baselines only)"
    return html.lookup(run.recipe, "method.name")


def forgetting_section(run: Run, charts: bool = True) -> str:
    """The forgetting section: each general-ability probe before and after fine-tuning; "" without probes.
    ``charts=False`` leaves the PNG charts out (the table has the same numbers)."""
    change = ((run.evaluation or {}).get("forgetting") or {}).get("change") or {}
    if not change:
        return ""
    rows = [[f"<th>{html.esc(probe)}</th>", html.cell(c.get("metric")), html.cell(c.get("before")),
             html.cell(c.get("after")), html.cell(c.get("change")), html.cell(html.interval_text(c)),
             html.cell(c.get("p_value")), html.cell("yes" if c.get("forgot") else "no")]
            for probe, c in change.items()]
    charts = []
    # One chart per metric: perplexity in the thousands beside accuracy below 1 would flatten the accuracy bars.
    for metric in dict.fromkeys(c.get("metric") for c in change.values()) if charts else ():
        probes = {p: c for p, c in change.items() if c.get("metric") == metric}
        series = {"base": {p: float(c["before"]) for p, c in probes.items() if html.is_number(c.get("before"))},
                  "fine-tuned": {p: float(c["after"]) for p, c in probes.items() if html.is_number(c.get("after"))}}
        charts.append(html.img(plots.grouped_bars(series, f"general-ability probes: {metric}", str(metric)),
                               f"forgetting: {metric}"))
    return ("<section><h2>Forgetting: general ability before and after</h2>"
            + html.table(["probe", "metric", "base", "fine-tuned", "change", "95% CI of change", "p", "forgot"], rows)
            + '<div class="row">' + "".join(charts) + "</div></section>")


def bias_section(run: Run) -> str:
    """The bias-check section: prediction flip rates and metric gaps per system; "" without a bias check."""
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


def _training(run: Run) -> str:
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
        parts.append("<h3>Run summary</h3>" + html.kv_table(html.flatten(summary)))
    return "".join(parts) + "</section>"


def _environment(run: Run) -> str:
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
    return ("<section><h2>Environment</h2>" + html.kv_table(known)
            + "<details><summary>Full manifest</summary>" + html.kv_table(html.flatten(manifest))
            + "</details></section>")
