"""The comparison page's statistics across runs: each run's fine-tuned system against the first run's on the same
test examples (a paired bootstrap of the task metric's difference), and each run's forgetting probes side by side.

Intervals computed on each run alone overlap more often than the runs truly differ: two runs scored on the same
examples are compared per example, as the run report compares two systems (:func:`lmtune.evaluate.bootstrap.
paired_difference`, 1,000 resamples, seed 0). Runs are paired only where their predictions files hold the same
inputs and references in the same order; otherwise the row says why not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmtune.evaluate import bootstrap, forgetting
from lmtune.kinds import systems as system_kinds
from lmtune.report import html
from lmtune.report.run import Run

N_RESAMPLES, SEED = 1000, 0


@dataclass(frozen=True)
class Paired:
    """One run against the first: a system (or ``probe <name>``), its value and the first run's, the difference
    with its interval and p-value (``found``), or why the two could not be paired (``why``)."""

    label: str
    what: str | None
    metric: str | None
    value: Any = None
    first: Any = None
    found: dict | None = None
    why: str = ""


def paired(runs: list[Run], labels: list[str]) -> list[Paired]:
    """Each later run's main fine-tuned system, and each of its forgetting probes, against the first run's; []
    for one run or a first run with no fine-tuned system."""
    first, base_system = runs[0], _system(runs[0])
    if len(runs) < 2 or base_system is None:
        return []
    return [row for run, label in zip(runs[1:], labels[1:])
            for row in [_paired_system(first, base_system, run, label), *_paired_probes(first, run, label)]]


def paired_section(runs: list[Run], labels: list[str], rows: list[Paired] | None = None) -> str:
    """:func:`paired` as the comparison page's table; "" without rows."""
    rows = paired(runs, labels) if rows is None else rows
    if not rows:
        return ""
    cells = [[f"<th>{html.esc(r.label)}</th>", html.cell(r.what), html.cell(r.metric)]
             + ([html.cell(r.value), html.cell(r.first), html.cell(r.found["value"]),
                 html.cell(html.interval_text(r.found)), html.cell(r.found["p_value"])] if r.found
                else [f'<td colspan="5">not paired: {html.esc(r.why)}</td>']) for r in rows]
    return (f"<h2>Against {html.esc(labels[0])}: paired differences</h2>"
            f'<p class="meta">Each run\'s {html.esc(_system(runs[0]))} system minus the first run\'s, on the same '
            "test examples, and its fine-tuned model on each forgetting probe minus the first run's, on the same "
            f"questions and text blocks: paired bootstrap ({N_RESAMPLES} resamples, seed {SEED}), 95% percentile "
            "interval, two-sided p against no difference.</p>"
            + html.table(["run", "system or probe", "metric", "value", "first run", "difference", "95% CI", "p"],
                         cells, "paired"))


def paired_lines(rows: list[Paired], first_label: str) -> list[str]:
    """:func:`paired` as terminal lines: ``label: what metric value vs first (first_label): difference [low, high],
    p = ...``."""
    lines = []
    for r in rows:
        head = f"{r.label}: {r.what} {r.metric or ''}".rstrip()
        if not r.found:
            lines.append(f"{head}: not paired with {first_label} ({r.why})")
            continue
        interval = html.interval_text(r.found)
        shown = f" [{interval.replace(' to ', ', ')}]" if interval else ""
        lines.append(f"{head} {_num(r.value)} vs {_num(r.first)} ({first_label}): {_num(r.found['value'], True)}"
                     f"{shown}, p = {_num(r.found['p_value'])}")
    return lines


def _num(value: Any, signed: bool = False) -> str:
    return f"{value:+.4g}" if signed and html.is_number(value) else f"{value:.4g}" if html.is_number(value) else "-"


def _system(run: Run) -> str | None:
    trained = [s for s in run.results if system_kinds.is_trained(s)]
    return system_kinds.main_trained(trained) if trained else None


def _paired_system(first: Run, base_system: str, run: Run, label: str) -> Paired:
    system, metric = _system(run), first.primary
    if system is None or metric is None or run.primary != metric:
        return Paired(label, system, metric, why="no fine-tuned system" if system is None else "another metric")
    found, why = _difference(first, base_system, run, system, metric)
    return Paired(label, system, metric, run.results[system].get(metric), first.results[base_system].get(metric),
                  found, why)


def _difference(first: Run, base_system: str, run: Run, system: str, metric: str) -> tuple[dict | None, str]:
    """``metric(run) - metric(first)`` with its interval, or None and why the two cannot be paired."""
    base, other = first.files.read_predictions(base_system), run.files.read_predictions(system)
    if not base or not other:
        return None, "a predictions file is missing"
    if [(r.get("input"), r.get("reference")) for r in base] != [(r.get("input"), r.get("reference")) for r in other]:
        return None, "the runs' test examples differ"
    labels = (run.evaluation or {}).get("labels") or None
    try:
        found = bootstrap.paired_difference(run.task or "", metric, [r.get("reference") for r in base],
                                            [r.get("prediction") for r in other], [r.get("prediction") for r in base],
                                            labels, n_resamples=N_RESAMPLES, seed=SEED)
    except (ValueError, KeyError, TypeError) as exc:
        return None, str(exc)
    return found, ""


def _paired_probes(first: Run, run: Run, label: str) -> list[Paired]:
    """One row per forgetting probe both runs measured: the run's fine-tuned value minus the first run's."""
    a, b = (((r.evaluation or {}).get("forgetting") or {}).get("finetuned") or {} for r in (first, run))
    if not (a and b):
        return []
    same = all(html.lookup(first.recipe, key) == html.lookup(run.recipe, key) for key in ("eval.forgetting", "seed"))
    if not same:
        return [Paired(label, "probes", None, why="the runs' forgetting probes or seeds differ")]
    return [Paired(label, f"probe {probe}", c["metric"], c["after"], c["before"],
                   {"value": c["change"], **{k: c.get(k) for k in ("ci_low", "ci_high", "p_value")}})
            for probe, c in sorted(forgetting.compare(a, b, N_RESAMPLES, SEED).items())]


def forgetting_section(runs: list[Run], labels: list[str]) -> str:
    """Every run's general-ability probes, base and fine-tuned, the change with its interval; "" without probes."""
    rows = []
    for run, label in zip(runs, labels):
        change = ((run.evaluation or {}).get("forgetting") or {}).get("change") or {}
        for probe, c in change.items():
            rows.append([f"<th>{html.esc(label)}</th>", html.cell(probe), html.cell(c.get("metric")),
                         html.cell(c.get("before")), html.cell(c.get("after")), html.cell(c.get("change")),
                         html.cell(html.interval_text(c)), html.cell(c.get("p_value")),
                         html.cell("yes" if c.get("forgot") else "no")])
    if not rows:
        return ""
    return ("<h2>Forgetting: general ability before and after, per run</h2>"
            + html.table(["run", "probe", "metric", "base", "fine-tuned", "change", "95% CI of change", "p",
                          "forgot"], rows, "forgetting"))
