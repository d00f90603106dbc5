"""The comparison page's statistics across runs: each run's fine-tuned system against the first run's on the same
test examples (a paired bootstrap of the task metric's difference), and each run's forgetting probes side by side.

Intervals computed on each run alone overlap more often than the runs truly differ: two runs scored on the same
examples are compared per example, as the run report compares two systems (:func:`lmtune.evaluate.bootstrap.
paired_difference`, 1,000 resamples, seed 0). Runs are paired only where their predictions files hold the same
inputs and references in the same order; otherwise the row says why not.
"""

from __future__ import annotations

from lmtune.evaluate import bootstrap, forgetting
from lmtune.kinds import systems as system_kinds
from lmtune.report import html
from lmtune.report.run import Run

N_RESAMPLES, SEED = 1000, 0


def paired_section(runs: list[Run], labels: list[str]) -> str:
    """Each later run's main fine-tuned system against the first run's; "" for one run or none fine-tuned."""
    first = runs[0]
    base_system = _system(first)
    if len(runs) < 2 or base_system is None:
        return ""
    rows = [row for run, label in zip(runs[1:], labels[1:])
            for row in [_paired_row(first, base_system, run, label), *_probe_rows(first, run, label)]]
    return (f"<h2>Against {html.esc(labels[0])}: paired differences</h2>"
            f'<p class="meta">Each run\'s {html.esc(base_system)} system minus the first run\'s, on the same test '
            f"examples, and its fine-tuned model on each forgetting probe minus the first run's, on the same "
            f"questions and text blocks: paired bootstrap ({N_RESAMPLES} resamples, seed {SEED}), 95% percentile "
            "interval, two-sided p against no difference.</p>"
            + html.table(["run", "system or probe", "metric", "value", "first run", "difference", "95% CI", "p"], rows,
                         "paired"))


def _system(run: Run) -> str | None:
    trained = [s for s in run.results if system_kinds.is_trained(s)]
    return system_kinds.main_trained(trained) if trained else None


def _paired_row(first: Run, base_system: str, run: Run, label: str) -> list[str]:
    system, metric = _system(run), first.primary
    head = [f"<th>{html.esc(label)}</th>", html.cell(system), html.cell(metric)]
    if system is None or metric is None or run.primary != metric:
        return head + [f'<td colspan="5">not paired: {"no fine-tuned system" if system is None else "another metric"}'
                       "</td>"]
    found, why = _difference(first, base_system, run, system, metric)
    if found is None:
        return head + [f'<td colspan="5">not paired: {html.esc(why)}</td>']
    value, before = run.results[system].get(metric), first.results[base_system].get(metric)
    return head + [html.cell(value), html.cell(before), html.cell(found["value"]), html.cell(html.interval_text(found)),
                   html.cell(found["p_value"])]


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


def _probe_rows(first: Run, run: Run, label: str) -> list[list[str]]:
    """One row per forgetting probe both runs measured: the run's fine-tuned value minus the first run's."""
    a, b = (((r.evaluation or {}).get("forgetting") or {}).get("finetuned") or {} for r in (first, run))
    if not (a and b):
        return []
    same = all(html.lookup(first.recipe, key) == html.lookup(run.recipe, key) for key in ("eval.forgetting", "seed"))
    if not same:
        return [[f"<th>{html.esc(label)}</th>", html.cell("probes"), html.cell(None),
                 '<td colspan="5">not paired: the runs\' forgetting probes or seeds differ</td>']]
    rows = []
    for probe, c in sorted(forgetting.compare(a, b, N_RESAMPLES, SEED).items()):
        rows.append([f"<th>{html.esc(label)}</th>", html.cell(f"probe {probe}"), html.cell(c["metric"]),
                     html.cell(c["after"]), html.cell(c["before"]), html.cell(c["change"]),
                     html.cell(html.interval_text(c)), html.cell(c.get("p_value"))])
    return rows


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
