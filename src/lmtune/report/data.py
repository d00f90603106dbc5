"""The report's data section, from ``data/data_report.json``: records and labels per split, what needs a
reader's attention (leakage, conflicting labels, truncation, personal data) as a list of sentences, the
cleaning steps as a table, token lengths, and the remaining details as dotted keys, never nested tables.
"""

from __future__ import annotations

from typing import Any

from lmtune.report import html, plots
from lmtune.report.run import Run

# Keys that have a section of their own; everything else is listed under "Other details".
_SHOWN = ("counts", "label_distribution", "steps", "token_lengths", "corrections")


def data(run: Run, charts: bool = True) -> str:
    """The data section; "" for a run without a data report. ``charts=False`` leaves the PNG charts out (the
    studio, which answers a page in milliseconds, shows the same counts as tables)."""
    report = run.data_report
    if not report:
        return ""
    found = warnings(report)
    warned = ('<ul class="warnings">' + "".join(f"<li>{html.esc(w)}</li>" for w in found) + "</ul>" if found
              else "<p>None: no leakage, conflicting labels, truncation or personal data found.</p>")
    rest = html.flatten({k: v for k, v in report.items() if k not in _SHOWN})
    return ("<section><h2>Data</h2>" + _splits(report, charts) + _corrections(report.get("corrections"))
            + "<h3>Warnings</h3>" + warned
            + _steps(report.get("steps")) + (_lengths(run, report) if charts else "")
            + ("<h3>Other details</h3>" + html.kv_table(rest) if rest else "") + "</section>")


def warnings(report: dict[str, Any]) -> list[str]:
    """Sentences about what in the data needs attention, from every part of the report that records it."""
    out = [str(w) for w in report.get("warnings") or [] if w]
    for key, what in (("leakage", "validation/test"), ("contamination", "evaluation-file")):
        found = report.get(key)
        if isinstance(found, dict) and (found.get("exact") or found.get("near")):
            exact, near = found.get("exact") or 0, found.get("near") or 0
            action = {"drop": "dropped from train", "report": "kept (data.leakage: report)"}.get(
                found.get("policy"), f"policy {found.get('policy')}")
            out.append(f"{exact + near} training records repeated {what} inputs ({exact} exactly, {near} nearly): "
                       f"{action}.")
    for split, found in _per_split(report, "conflicting_labels"):
        if found.get("count"):
            example = f", e.g. {html.as_text(found['examples'][:3])}" if found.get("examples") else ""
            out.append(f"{found['count']} {_split_word(split)} inputs appear with different labels{example}.")
    limit = html.lookup(report, "truncation.max_length")
    for split, found in _per_split(report, "truncation"):
        if found.get("truncated"):
            out.append(f"{found['truncated']} of {found.get('total')} {split} examples were cut to max_length {limit}.")
        if found.get("longer_than_max_length"):
            out.append(f"{found['longer_than_max_length']} of {found.get('total')} {split} prompts are longer than "
                       f"max_length {limit}; they are evaluated whole, cut only to the model's context.")
    for split, found in _per_split(report, "pii"):
        if found.get("records_with_pii"):
            kinds = ", ".join(f"{k} {v}" for k, v in found.items()
                              if html.is_number(v) and v and k != "records_with_pii")
            out.append(f"{found['records_with_pii']} {split} records held personal data ({kinds}); policy "
                       f"{found.get('policy')}.")
    out += [f"{split} sampled: {said}" for split, said in (report.get("sampled") or {}).items()]
    return out


def _per_split(report: dict, key: str) -> list[tuple[str, dict]]:
    value = report.get(key)
    return [(s, v) for s, v in value.items() if isinstance(v, dict)] if isinstance(value, dict) else []


def _split_word(split: str) -> str:
    return "training" if split == "train" else split


def _splits(report: dict, charts: bool = True) -> str:
    """Records per split with each label's count, and the label distribution as a chart."""
    counts = report.get("counts") if isinstance(report.get("counts"), dict) else {}
    labels = report.get("label_distribution") if isinstance(report.get("label_distribution"), dict) else {}
    groups = {s: {k: v for k, v in c.items() if html.is_number(v)} for s, c in labels.items() if isinstance(c, dict)}
    names = list(dict.fromkeys(label for c in groups.values() for label in c))
    splits = list(dict.fromkeys(list(counts) + list(groups)))
    if not splits:
        return ""
    rows = [[f"<th>{html.esc(s)}</th>", html.cell(counts.get(s))] + [html.cell(groups.get(s, {}).get(n)) for n in names]
            for s in splits]
    chart = (html.img(plots.grouped_bars(groups, "Label distribution"), "label distribution")
             if charts and any(groups.values()) else "")
    return "<h3>Records per split</h3>" + html.table(["split", "records"] + names, rows) + chart


def _corrections(found: Any) -> str:
    """ "N corrections changed M records (test: a, train: b)" when the run had ``data.corrections``."""
    if not isinstance(found, dict) or not html.is_number(found.get("read")):
        return ""
    per_split = found.get("per_split") if isinstance(found.get("per_split"), dict) else {}
    where = ", ".join(f"{split}: {n}" for split, n in per_split.items())
    changed = found.get("records_changed")
    return (f'<p class="corrections">{html.esc(found["read"])} corrections changed {html.esc(changed)} record'
            f'{"" if changed == 1 else "s"}{f" ({html.esc(where)})" if where else ""} '
            f'<small>(data.corrections: {html.esc(found.get("file"))})</small></p>')


def _steps(steps: Any) -> str:
    """What each data step left, one row per step, with what it removed or found as text."""
    if not isinstance(steps, list) or not steps:
        return ""
    rows = []
    for step in steps:
        if not isinstance(step, dict):
            continue
        extra = {k: v for k, v in step.items() if k not in ("split", "step", "records") and v not in (0, None, [], "")}
        said = "; ".join(f"{k.replace('_', ' ')}: {html.as_text(v)}" for k, v in extra.items())
        rows.append([html.cell(step.get("split")), html.cell(step.get("step")), html.cell(step.get("records")),
                     html.cell(said or None)])
    return "<h3>Cleaning steps</h3>" + html.table(["split", "step", "records after", "details"], rows, "steps")


def _lengths(run: Run, report: dict) -> str:
    lengths = report.get("token_lengths")
    if not isinstance(lengths, dict):
        return ""
    series = {s: [float(x) for x in v] for s, v in lengths.items()
              if isinstance(v, list) and v and all(html.is_number(x) for x in v)}
    if not series:
        return ""
    max_length = html.lookup(report, "truncation.max_length") or html.lookup(run.recipe, "training.max_length")
    limit = float(max_length) if html.is_number(max_length) else None
    return "<h3>Token lengths</h3>" + html.img(plots.length_histogram(series, limit), "token length histogram")
