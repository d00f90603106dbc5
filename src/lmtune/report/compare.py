"""``lmtune compare RUN_DIR...``: several runs side by side in one self-contained HTML page.

Each run's ``eval.json`` gives its systems' task metric, confidence interval, cost and latency. The page names each
run by its recipe name, and by its directory too where names repeat; warns when the runs were evaluated on different
test sets; puts every (run, system) pair in one table and, per task metric, one chart with the 95% intervals; each
run's fine-tuned system against the first run's on the same examples (a paired bootstrap) and every run's forgetting
probes (:mod:`lmtune.report.compare_stats`); lists the recipe keys that differ between the runs; and repeats each
run's verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmtune import atomic, manifest
from lmtune.errors import UserError
from lmtune.kinds import systems as system_kinds
from lmtune.recipe_model import model_name
from lmtune.report import compare_stats, html, plots
from lmtune.report.run import Run, load
from lmtune.report.systems import load_text
from lmtune.report.verdict import verdict_sentences
from lmtune.run_dir import RunDir


def compare(run_dirs: list[Path], out: Path) -> Path:
    """Write the comparison page of ``run_dirs`` to ``out`` and return it."""
    return compare_runs(run_dirs, out)[0]


def compare_runs(run_dirs: list[Path], out: Path) -> tuple[Path, list[str]]:
    """Write the comparison page of ``run_dirs`` to ``out``; return it and the paired differences against the
    first run as terminal lines (:func:`lmtune.report.compare_stats.paired_lines`)."""
    runs = [_load(Path(d)) for d in run_dirs]
    labels = run_labels(runs)
    paired = compare_stats.paired(runs, labels)
    body = [f"<h1>Comparison of {len(runs)} runs</h1>", test_set_warning(runs, labels), _runs(runs, labels),
            _systems(runs, labels), _charts(runs, labels), compare_stats.paired_section(runs, labels, paired),
            compare_stats.forgetting_section(runs, labels), _differences(runs, labels), _verdicts(runs, labels)]
    notes = [f"{label}: {note}" for run, label in zip(runs, labels) for note in run.notes]
    atomic.write_text(Path(out), html.page("lmtune comparison", "".join(body), notes))
    return Path(out), compare_stats.paired_lines(paired, labels[0])


def _load(directory: Path) -> Run:
    files = RunDir(directory)
    if not files.eval.is_file():
        raise UserError("no eval.json: not an evaluated lmtune run directory", source=str(directory))
    try:
        files.read_eval()
    except json.JSONDecodeError as exc:
        raise UserError(f"eval.json is not valid JSON ({exc.msg})", source=f"{files.eval}:{exc.lineno}") from None
    return load(directory)


def run_labels(runs: list[Run]) -> list[str]:
    """Each run's recipe name, with its directory's name where names repeat (or its path, if those repeat too)."""
    names = [run.name for run in runs]
    labels = [name if names.count(name) == 1 else f"{name} ({run.directory.name})" for run, name in zip(runs, names)]
    if len(set(labels)) < len(labels):
        labels = [label if labels.count(label) == 1 else f"{run.name} ({run.directory})"
                  for run, label in zip(runs, labels)]
    return labels


def evaluated_on(run: Run) -> dict[str, tuple]:
    """What identifies the test examples a run was evaluated on, by strength of the record.

    ``sha256``: the fingerprint of the evaluated records in ``data_report.json`` (``test_sha256``);
    ``file``: for runs written before it, the sha256 of ``data/test.jsonl`` with the number evaluated
    (and the seed, when ``eval.max_examples`` sampled fewer); ``recipe``: the number evaluated and where
    the test split came from (its file, or the train file with the seed and split fractions).
    """
    n = (run.evaluation or {}).get("n")
    found: dict[str, tuple] = {}
    sha = (run.data_report or {}).get("test_sha256")
    if isinstance(sha, str) and sha:
        found["sha256"] = (sha,)
    path = run.files.data.split("test")
    if path.is_file():
        with path.open("rb") as lines:
            sampled = n is not None and n < sum(1 for line in lines if line.strip())
        found["file"] = (manifest.sha256_file(path), n, run.recipe.get("seed") if sampled else None)
    data = run.recipe.get("data") if isinstance(run.recipe.get("data"), dict) else {}
    if data.get("test"):
        found["recipe"] = (n, str(data["test"]))
    else:
        split = json.dumps(data.get("split"), sort_keys=True)
        found["recipe"] = (n, str(data.get("train")), run.recipe.get("seed"), split)
    return found


def _test_set_text(key: tuple, level: str) -> str:
    if level == "sha256":
        return f"sha256 {key[0][:12]}"
    if level == "file":
        return f"{key[1]} examples of data/test.jsonl (sha256 {key[0][:12]})" + (f", seed {key[2]}" if key[2] else "")
    if len(key) == 2:
        return f"{key[0]} examples of {key[1]}"
    return f"{key[0]} examples split from {key[1]} (seed {key[2]})"


def _common_level(runs: list[Run]) -> tuple[str, list[tuple]]:
    """The strongest test-set record every run has, and each run's key at that level."""
    sets = [evaluated_on(run) for run in runs]
    level = next(lv for lv in ("sha256", "file", "recipe") if all(lv in s for s in sets))
    return level, [s[level] for s in sets]


def test_set_warning(runs: list[Run], labels: list[str]) -> str:
    """A warning paragraph when ``runs`` were evaluated on different test sets (``labels`` name them); "" if not."""
    level, keys = _common_level(runs)
    if len(set(keys)) < 2:
        return ""
    which = "; ".join(f"{label}: {_test_set_text(key, level)}" for label, key in zip(labels, keys))
    return (f'<p class="warning">These runs were evaluated on different test sets ({html.esc(which)}). Their metrics '
            "are not directly comparable: compare systems within a run, or evaluate the runs on one test file.</p>")


def _runs(runs: list[Run], labels: list[str]) -> str:
    level, keys = _common_level(runs)
    rows = [[f"<th>{html.esc(label)}</th>", f'<td class="path">{html.esc(run.directory)}</td>', html.cell(run.task),
             html.cell((run.evaluation or {}).get("n")), html.cell(_test_set_text(key, level)),
             html.cell(model_name(run.recipe.get("model"))), html.cell(html.lookup(run.recipe, "method.name")),
             html.cell(load_text(run).removeprefix("at ") or "not recorded")]
            for run, label, key in zip(runs, labels, keys)]
    return "<h2>Runs</h2>" + html.table(["run", "directory", "task", "test examples", "test set", "model",
                                         "method", "latency measured at"], rows)


def system_method(system: str, method: str | None) -> str:
    """What a system's answers come from: the fine-tuning method only for fine-tuned systems."""
    if system_kinds.is_trained(system):
        return method or "—"
    return "—" if system_kinds.is_constant(system) else "prompting"


def _system_model(system: str, model: str | None) -> str | None:
    kind = system_kinds.find(system)
    if kind is not None and kind.other_model:
        return system_kinds.other_model(system)
    return "—" if system_kinds.is_constant(system) else model


def _systems(runs: list[Run], labels: list[str]) -> str:
    rows = []
    for run, label in zip(runs, labels):
        primary, method = run.primary, html.lookup(run.recipe, "method.name")
        for i, (system, result) in enumerate(run.results.items()):
            latency = result.get("latency_s")
            # The run's name once, spanning its systems' rows.
            rows.append(([f'<th rowspan="{len(run.results)}">{html.esc(label)}</th>'] if i == 0 else [])
                        + [html.cell(system),
                         html.cell(_system_model(system, model_name(run.recipe.get("model")))),
                         html.cell(system_method(system, method)), html.cell(primary),
                         html.with_interval(result.get(primary), (result.get("ci") or {}).get(primary)),
                         html.cell(result.get("cost_per_1k_queries")),
                         html.cell(round(1000 * latency, 1) if html.is_number(latency) else None)])
    return "<h2>Systems</h2>" + html.table(["run", "system", "model", "method", "metric", "value and 95% CI",
                                            "cost / 1,000 queries", "latency ms per query"], rows)


def _charts(runs: list[Run], labels: list[str]) -> str:
    """One chart per task metric the runs rank on, every run's systems with their 95% intervals."""
    charts = []
    for metric in dict.fromkeys(run.primary for run in runs if run.primary):
        groups = {label: run.values(metric) for run, label in zip(runs, labels) if run.primary == metric}
        intervals = {label: {s: r["ci"][metric] for s, r in run.results.items() if (r.get("ci") or {}).get(metric)}
                     for run, label in zip(runs, labels) if run.primary == metric}
        if any(groups.values()):
            what = f"{metric} per run and system" + (" with 95% intervals" if any(intervals.values()) else "")
            charts.append(f"<h2>Chart: {html.esc(what)}</h2>"
                          + html.img(plots.interval_bars(groups, metric, intervals), what))
    return "".join(charts)


def differing_keys(flat: list[dict]) -> list[str]:
    """The keys of flattened recipes (:func:`lmtune.report.html.flatten`) whose values differ, or that only some set."""
    keys = dict.fromkeys(k for recipe in flat for k in recipe)
    return [k for k in keys if len({json.dumps([k in f, f.get(k)], default=str, sort_keys=True) for f in flat}) > 1]


def _differences(runs: list[Run], labels: list[str]) -> str:
    """The recipe keys whose values differ between the runs, as dotted keys."""
    flat = [html.flatten(run.recipe) for run in runs]
    differ = differing_keys(flat)
    if not differ:
        return "<h2>Hyperparameter differences</h2><p>The runs' recipes are the same.</p>"
    rows = [[f"<th>{html.esc(k)}</th>"] + [html.cell(html.as_text(f[k]) if k in f else "(not set)") for f in flat]
            for k in differ]
    return ("<h2>Hyperparameter differences</h2><p class=\"meta\">recipe keys whose values differ between the runs"
            "</p>" + html.table(["recipe key"] + labels, rows))


def _verdicts(runs: list[Run], labels: list[str]) -> str:
    parts = []
    for run, label in zip(runs, labels):
        sentences = verdict_sentences(run.evaluation or {}, run.primary, load_text(run)) if run.primary else []
        parts.append(f"<h3>{html.esc(label)}</h3><p class=\"summary\">{html.esc(' '.join(sentences))}</p>"
                     f"<p class=\"meta\">{html.esc(str(run.directory))}</p>")
    return "<h2>Verdicts</h2>" + "".join(parts)
