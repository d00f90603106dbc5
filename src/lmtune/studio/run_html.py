"""The Run page's sections as HTML, rendered on the server so the page is complete on first paint.

Every piece of text from the run (its names, labels, recipe, data report sources) goes through
:func:`~lmtune.studio.layout.esc`; the report's own sections (verdict, systems, data, calibration,
forgetting, bias) are reused from :mod:`lmtune.report`, which escapes the same way. Element ids here are the
ones ``run.js`` fills.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from lmtune.recipe_model import model_name
from lmtune.report import calibration, data, html, page
from lmtune.report.run import Run
from lmtune.studio.layout import esc
from lmtune.studio.run_view import LIVE, affected_records

CANCELLABLE = LIVE
RESUMABLE = ("interrupted", "failed", "cancelled")

#: Filled by run.js from the run queue's console API; hidden until it answers (a run not started here has none).
CONSOLE = ('<section id="console-section" hidden><h2>Console</h2>'
           '<pre class="console" id="console"></pre></section>')


def header(name: str, found: Run | None, state: dict[str, Any], has_report: bool) -> str:
    """Name (and the recipe's name when it differs), task, model, method, live status, times, error, actions."""
    recipe = found.recipe if found is not None else {}
    title = found.name if found is not None else name
    facts = {"task": found.task if found is not None else None, "model": model_name(recipe.get("model")),
             "method": html.lookup(recipe, "method.name")}
    line = " · ".join(f"{k}: <strong>{esc(v)}</strong>" for k, v in facts.items() if v is not None)
    current = str(state.get("state") or "")
    started = state.get("started_at")
    started_text = (time.strftime("%Y-%m-%d %H:%M", time.localtime(started)) if html.is_number(started) else "—")
    status = (f'<span id="run-status"><span class="status {esc(current)}">{esc(current)}</span></span>'
              f' · started <span id="run-started">{esc(started_text)}</span>'
              f' · duration <span id="run-duration">{esc(_duration(state.get("elapsed_s")))}</span>')
    error = state.get("error")
    report = (f'<a href="/runs/{esc(quote(name))}/report" id="report-link">Report (report.html)</a>'
              if has_report else "")
    return ('<section id="run-header">'
            f'<h1>{esc(name)}{f" <small>{esc(title)}</small>" if title != name else ""}</h1>'
            f'<p class="meta">{line}{" · " if line else ""}{status}</p>'
            f'<p class="warning" id="run-error"{"" if error else " hidden"}>{esc(error or "")}</p>'
            f'<div class="toolbar">{report}{_actions(name, current)}'
            '<span id="action-message" class="warning" hidden></span></div></section>')


def _actions(name: str, current: str) -> str:
    """Cancel and Resume for a run of its own; a link to the studies for a study's run (a trial, a curve's point, an
    active-learning round), which its own command resumes, not the studio."""
    if "~" in name:
        return f' <span class="meta">part of the study <a href="/studies">{esc(name.split("~")[0])}</a></span>'
    return (f'<button type="button" id="run-cancel"{"" if current in CANCELLABLE else " hidden"}>Cancel</button>'
            f'<button type="button" id="run-resume"{"" if current in RESUMABLE else " hidden"}>Resume</button>')


def _duration(seconds: Any) -> str:
    if not html.is_number(seconds):
        return "—"
    s = round(seconds)
    h, m = s // 3600, (s % 3600) // 60
    return f"{h} h {m} min" if h else f"{m} min {s % 60} s" if m else f"{s} s"


def curves_section(curves: dict[str, Any], state: str) -> str:
    """The chart containers run.js draws into; a note instead for a run that is done and never trained."""
    if not curves["train"] and not curves["validation"] and state not in LIVE:
        return ('<section id="curves"><h2>Training curves</h2>'
                '<p class="meta">no training curves (this run did not train)</p></section>')
    return ('<section id="curves"><h2>Training curves</h2><p class="meta" id="curve-facts"></p><div class="row">'
            '<div id="curve-loss"></div><div id="curve-lr"></div><div id="curve-speed"></div></div></section>')


def confusion_section(systems: list[str], confusion: dict[str, Any]) -> str:
    """The system picker, the first system's matrix (run.js redraws it for another system) and the cell examples."""
    options = "".join(f'<option value="{esc(s)}"{" selected" if s == confusion["system"] else ""}>{esc(s)}</option>'
                      for s in systems)
    return ('<section id="confusion"><h2>Confusion matrix</h2><p class="meta">rows: gold label, columns: predicted; '
            'click a count to see its examples</p>'
            f'<div class="toolbar"><label>System <select id="confusion-system">{options}</select></label></div>'
            f'<div id="confusion-table">{confusion_table(confusion)}</div><div id="cell-examples"></div></section>')


def confusion_table(confusion: dict[str, Any]) -> str:
    """Gold rows by predicted columns; each non-zero count a button naming its cell (``data-gold``,
    ``data-predicted``)."""
    predicted = confusion["predicted_labels"]
    head = "".join(f"<th>{html.breakable(p)}</th>" for p in predicted)
    rows = [f"<tr><th>{html.breakable(gold)}</th>{''.join(_count(gold, p, n) for p, n in zip(predicted, counts))}</tr>"
            for gold, counts in zip(confusion["labels"], confusion["matrix"])]
    return (f'<table class="confusion"><thead><tr><th>gold \\ predicted</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _count(gold: str, predicted: str, n: int) -> str:
    css = "num diagonal" if gold == predicted else "num"
    if not n:
        return f'<td class="{css}">0</td>'
    return (f'<td class="{css}"><button type="button" data-gold="{esc(gold)}" data-predicted="{esc(predicted)}">'
            f"{n}</button></td>")


def predictions_section(labelled: bool, name: str) -> str:
    """The predictions browser's review links, filters and an empty table that run.js fills from the page data and
    the API (with a "gold is wrong" control per row of a labelled task: ``corrections.js``)."""
    judged = "" if labelled else " disabled title=\"this task's answers are not judged right or wrong\""
    return ('<section id="predictions"><h2>Predictions</h2>' + _review_links(labelled, name) +
            '<div class="toolbar"><label>Judge <select id="pred-system"></select></label>'
            f'<select id="pred-correct"{judged}><option value="all">all</option><option value="correct">correct'
            '</option><option value="incorrect">incorrect</option></select>'
            '<label><input type="checkbox" id="pred-disagree"> systems disagree</label>'
            f'<select id="pred-sort"{judged}><option value="index">test order</option>'
            '<option value="confidence">most confident first</option></select>'
            '<input type="search" id="pred-q" placeholder="Search input, reference and predictions">'
            '<button type="button" id="pred-prev">Previous</button><span id="pred-count" class="meta"></span>'
            '<button type="button" id="pred-next">Next</button></div>'
            '<p class="meta" id="pred-note" hidden></p>'
            '<div class="wide"><table id="pred-table" class="predictions"><thead></thead><tbody></tbody></table></div>'
            '</section>')


def _review_links(labelled: bool, name: str) -> str:
    """One click to the predictions worth a second look (run.js applies ``?review=``), and to the review pages."""
    links = ['<a id="review-disagreements" href="?review=disagreements#predictions">Review disagreements</a>']
    if labelled:
        links += ['<a id="review-confident" href="?review=confident-errors#predictions">Review confident errors</a>',
                  f'<a href="/review/{esc(quote(name))}?split=train">Review training labels</a>',
                  f'<a href="/review?run={esc(quote(name))}">Corrections</a>']
    return f'<p class="review-links">{" · ".join(links)}</p>'


def data_section(found: Run) -> str:
    """The report's data section with the records its steps, leakage and label conflicts name."""
    section = data.data(found, charts=False)
    kinds = affected_records(found.data_report)
    if not section or not kinds:
        return section
    parts = ['<h3>Affected records</h3><p class="meta">the examples the data report records of each kind, by '
             "source line (the source files are not opened here)</p>"]
    for kind, rows in kinds.items():
        cells = [[html.cell(r["split"]), f'<td class="path">{esc(html.fmt(r["source"], 300))}</td>',
                  f'<td class="path">{esc(html.fmt(r["matched"], 300))}</td>', html.cell(r["kind"]),
                  html.cell(r["similarity"])] for r in rows]
        parts.append(f"<h4>{esc(kind)} ({len(rows)})</h4>"
                     + html.table(["split", "source", "matches", "kind", "similarity"], cells, "affected"))
    end = section.rindex("</section>")
    return section[:end] + "".join(parts) + section[end:]


def probes(found: Run) -> list[str]:
    """The report's calibration, forgetting and bias sections (empty strings when the run has none of them).
    The reliability diagrams stay: unlike the forgetting charts, no table on the page has their bins."""
    return [calibration.section(found), page.forgetting_section(found, charts=False), page.bias_section(found)]
