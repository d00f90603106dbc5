"""The labelling pages' HTML: the queue list with the owner's forms, the labelling page, the owner's overview.

Every piece of record, label, note and name text goes through :func:`layout.esc`; ``label.js`` and
``label_admin.js`` take over from the page data and write text with ``textContent`` only.
"""

from __future__ import annotations

import time
from typing import Any

from lmtune.guidance.labelling import Queue
from lmtune.studio import layout

esc = layout.esc
SHOWN_CHARS = 300  # of a flagged record's text in the overview


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch)) if epoch else "—"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _progress(p: dict[str, int]) -> str:
    return f"{p['answered']} of {p['needed']} answers"


def queues_page(rows: list[dict[str, Any]], owner: bool, names: list[str], recipe_names: list[str], studio) -> str:
    """``/label``: the queues; for the owner, a form to create one and the annotators with a form to add one."""
    head = "<th>Queue</th><th>Task</th><th>Progress</th><th>Yours</th>" + (
        "<th>Annotators</th><th>Created</th><th></th>" if owner else "")
    body_rows = "".join(_queue_row(row, owner) for row in rows)
    table = (f'<table id="label-queues" class="runs"><thead><tr>{head}</tr></thead><tbody>{body_rows}</tbody></table>'
             if rows else '<p id="no-queues" class="meta">No labelling queues yet.</p>')
    body = f'<h1>Labelling</h1>{table}'
    if owner:
        body += _queue_form(recipe_names, studio) + _annotators(names)
    return layout.page("Labelling", body, "/label", ("label_admin.js",) if owner else ())


def _queue_row(row: dict[str, Any], owner: bool) -> str:
    name = esc(row["name"])
    cells = (f'<td><a href="/label/{name}">{name}</a></td><td>{esc(row["task"])}'
             + (f' <small>{esc(", ".join(row["labels"]))}</small>' if row["labels"] else "")
             + f'</td><td>{esc(_progress(row["progress"]))} <small>{row["progress"]["total"]} records</small></td>'
             f'<td class="num">{row["progress"]["mine"]}</td>')
    if owner:
        cells += (f'<td>{esc(", ".join(row.get("annotators", [])) or "—")}</td><td>{_when(row["created_at"])}</td>'
                  f'<td><a href="/label/{name}/overview">Overview</a></td>')
    return f'<tr data-queue="{name}">{cells}</tr>'


def _queue_form(recipe_names: list[str], studio) -> str:
    options = "".join(f'<option value="{esc(n)}">{esc(n)}</option>' for n in recipe_names)
    folders = f"<code>{esc(studio.runs)}</code>" + (f" or <code>{esc(studio.recipes)}</code>" if studio.recipes else "")
    return ('<h2>New queue</h2><form id="new-queue" class="label-form">'
            '<label>Name <input type="text" name="name" required autocomplete="off"></label>'
            f'<label>Pool file <input type="text" name="pool" required placeholder="relative to the runs folder">'
            f'<small>JSONL, CSV or Parquet in {folders}; an <code>lmtune active</code> queue file keeps its '
            'ranking and pre-labels</small></label>'
            f'<label>Recipe <select name="recipe"><option value="">none: type the labels</option>{options}'
            '</select></label>'
            '<label>Labels <input type="text" name="labels" placeholder="negative, neutral, positive"></label>'
            '<label>Task <select name="task"><option value="">from the recipe (else classification)</option>'
            '<option value="classification">classification</option><option value="generation">generation'
            '</option></select></label>'
            '<label>Overlap <input type="number" name="overlap" min="0" max="1" step="0.05" value="0">'
            '<small>share of records two annotators label (for agreement)</small></label>'
            '<label class="wide">Guidelines <textarea name="guidelines" rows="4"></textarea></label>'
            '<div class="toolbar"><button type="submit" class="primary">Create queue</button>'
            '<span id="queue-status" class="meta" role="status"></span></div></form>')


def _annotators(names: list[str]) -> str:
    items = "".join(f"<li>{esc(n)}</li>" for n in names)
    return ('<h2>Annotators</h2>'
            f'<ul id="annotators">{items}</ul>'
            + ("" if names else '<p id="no-annotators" class="meta">No annotators yet.</p>')
            + '<form id="new-annotator" class="toolbar"><label>Name <input type="text" name="name" required '
              'autocomplete="off"></label><button type="submit">Add annotator</button>'
              '<span id="annotator-status" class="meta" role="status"></span></form>'
              '<p id="annotator-link" class="summary" hidden>Send this link to <b id="link-name"></b> (it is shown '
              'only now): <code id="link"></code></p>')


def label_page(queue: Queue, who: str, current: dict[str, Any]) -> str:
    """``/label/<queue>``: the record ``current`` holds, its pre-label, the answer buttons or text box."""
    settings, shown = queue.settings, current["record"]
    generation = not settings.labelled
    text = esc(shown["text"]) if shown else ""
    if generation:
        answer = ('<textarea id="answer-text" rows="6" aria-label="Your answer">'
                  f'{esc((shown or {}).get("prelabel") or "")}</textarea>')
    else:
        answer = '<div id="choices" class="label-choices">' + "".join(
            f'<button type="button" data-label="{esc(label)}">' + (f"<kbd>{i + 1}</kbd> " if i < 9 else "")
            + f'{esc(label)}</button>' for i, label in enumerate(settings.labels)) + '</div>'
    keys = ("Ctrl+Enter submits your text · Esc leaves the text box, then S skips, U undoes, F flags"
            if generation else "1-9 pick a label · Enter accepts the pre-label · S skips · U undoes · "
            "F flags (then a digit flags with that label, F or Enter without one)")
    guidelines = (f'<details class="guidelines" open><summary>Guidelines</summary><div>{esc(settings.guidelines)}'
                  '</div></details>' if settings.guidelines.strip() else "")
    body = (f'<h1>{esc(queue.name)}</h1><p class="meta">Labelling as <b>{esc(who)}</b> · <a href="/label">all '
            'queues</a></p>'
            '<div class="label-progress"><progress id="progress" max="1" value="0"></progress>'
            '<span id="progress-text" class="meta"></span></div>'
            f'{guidelines}<section id="record" class="label-record"{"" if shown else " hidden"}>'
            '<div class="meta">Record <span id="record-index"></span></div>'
            f'<div id="record-text" class="record-text">{text}</div><p id="prelabel" class="prelabel"></p>'
            f'{answer}<div class="toolbar">'
            + ("" if generation else '<button type="button" id="accept">Accept pre-label (Enter)</button>')
            + ('<button type="button" id="submit" class="primary">Submit (Ctrl+Enter)</button>' if generation else "")
            + '<button type="button" id="skip">Skip (S)</button><button type="button" id="flag">Flag (F)</button>'
              '<input type="text" id="note" placeholder="note for a flag" aria-label="Note for a flag">'
              '<button type="button" id="undo">Undo (U)</button></div></section>'
              f'<p id="done" class="summary"{" hidden" if shown else ""}>Nothing left for you in this queue. '
              'Thank you! (U undoes your last answer.)</p>'
              '<p id="status" class="label-status meta" role="status"></p>'
              f'<p class="meta keys">Keys: {esc(keys)}</p>')
    data = {"queue": queue.name, "labels": settings.labels, "generation": generation, "current": current}
    return layout.page(f"Label {queue.name}", body, "/label", ("label.js",), data)


def overview_page(queue: Queue, summary: dict[str, Any], people: list[dict[str, Any]], agreement: dict[str, Any],
                  flagged: list[dict[str, Any]], retrains: list[dict[str, Any]] = ()) -> str:
    """``/label/<queue>/overview``: progress per annotator, agreement with intervals, flagged records, export."""
    settings, name = queue.settings, esc(queue.name)
    source = f' from <code>{esc(settings.recipe)}</code>' if settings.recipe else ""
    body = (f'<h1>{name}: overview</h1><p class="meta">{esc(settings.task)}'
            + (f' · labels {esc(", ".join(settings.labels))}' if settings.labels else "")
            + f'{source} · pool <code>{esc(queue.pool)}</code> ({esc(queue.ordering)} order) · overlap '
              f'{settings.overlap:g} · created {_when(queue.created_at)}</p>'
              f'<div class="toolbar"><a id="export" href="/api/label/{name}/export" download>Export labels (JSONL)</a>'
              f'<a href="/label/{name}">Label</a></div>'
              f'<h2>Progress</h2><p id="overall">{esc(_progress(summary["progress"]))} on '
              f'{summary["progress"]["total"]} records</p>{_people(people)}'
              f'<h2>Agreement</h2>{_agreement(agreement)}<h2>Flagged</h2>{_flagged(flagged)}'
              + _retrain(queue, retrains))
    return layout.page(f"{queue.name}: overview", body, "/label", ("label_admin.js",))


def _retrain(queue: Queue, retrains: list[dict[str, Any]]) -> str:
    """The Retrain form (a queue made from a recipe) and the runs it started."""
    if not queue.settings.recipe:
        return ""
    done = "".join(f'<tr><td><a href="/runs/{esc(r["run"])}">{esc(r["run"])}</a></td><td>{r["labels"]}</td>'
                   f'<td>{esc(r["base_run"] or "")}</td><td>{_when(r["created_at"])}</td></tr>' for r in retrains)
    table = (f'<table id="retrains"><tr><th>run</th><th>labelled records</th><th>compared with</th><th>started</th>'
             f'</tr>{done}</table>' if retrains else "")
    return (f'<h2>Retrain</h2><p class="meta">A run of <code>{esc(queue.settings.recipe)}</code> with these labels '
            'added to its train split (validation and test unchanged), then the Compare page on old vs new.</p>'
            f'<form id="retrain" data-queue="{esc(queue.name)}"><label>at least <input name="min_new" type="number" '
            f'min="1" value="10"> new labels</label> <button type="submit">Retrain</button> '
            f'<span id="retrain-status" class="meta"></span></form>{table}')


def _people(people: list[dict[str, Any]]) -> str:
    if not people:
        return '<p class="meta">No answers yet.</p>'
    rows = "".join(f'<tr data-annotator="{esc(p["annotator"])}"><td>{esc(p["annotator"])}</td>'
                   f'<td class="num">{p["answered"]}</td><td class="num">{p["labelled"]}</td>'
                   f'<td class="num">{p["skipped"]}</td><td class="num">{p["flagged"]}</td>'
                   f'<td>{_when(p["latest"])}</td></tr>' for p in people)
    return ('<table id="annotator-progress" class="runs"><thead><tr><th>Annotator</th><th>Answered</th><th>Labelled'
            f'</th><th>Skipped</th><th>Flagged</th><th>Latest</th></tr></thead><tbody>{rows}</tbody></table>')


def _kappa_cells(row: dict[str, Any]) -> str:
    kappa = _num(row["kappa"]) if row["kappa"] is not None else esc(row["note"] or "—")
    interval = (f'[{_num(row["ci_low"])}, {_num(row["ci_high"])}]' if row["ci_low"] is not None
                else esc(row["note"]) if row["kappa"] is not None and row["note"] else "—")
    return f'<td class="num kappa">{kappa}</td><td class="num">{interval}</td>'


def _agreement(found: dict[str, Any]) -> str:
    note = f'<p class="meta">{esc(found["note"])}</p>' if found["note"] else ""
    if not found["applies"] or not found["pairs"]:
        return note
    rows = "".join(f'<tr data-pair="{esc(p["a"])}|{esc(p["b"])}"><td>{esc(p["a"])} · {esc(p["b"])}</td>'
                   f'<td class="num">{p["records"]}</td><td class="num">{_num(p["raw_agreement"])}</td>'
                   f'<td>Cohen</td>{_kappa_cells(p)}</tr>' for p in found["pairs"])
    if found["fleiss"] is not None:
        f = found["fleiss"]
        rows += (f'<tr data-pair="all"><td>{esc(", ".join(found["annotators"]))}</td><td class="num">{f["records"]}'
                 f'</td><td class="num">—</td><td>Fleiss</td>{_kappa_cells(f)}</tr>')
    return (f'{note}<table id="agreement" class="runs"><thead><tr><th>Annotators</th><th>Records in common</th>'
            '<th>Raw agreement</th><th>Measure</th><th>Kappa</th><th>95% interval</th></tr></thead>'
            f'<tbody>{rows}</tbody></table><p class="meta">Kappa: agreement beyond chance (1 perfect, 0 chance); '
            'intervals: bootstrap over records.</p>')


def _flagged(flagged: list[dict[str, Any]]) -> str:
    if not flagged:
        return '<p class="meta" id="no-flags">No flagged records.</p>'
    rows = "".join(f'<tr><td class="num">{a["index"]}</td><td>{esc(_cut(a["text"]))}</td><td>{esc(a["annotator"])}'
                   f'</td><td>{esc(a["label"] or "—")}</td><td>{esc(a["note"] or "")}</td></tr>' for a in flagged)
    return ('<table id="flagged" class="runs"><thead><tr><th>Record</th><th>Text</th><th>Annotator</th><th>Label</th>'
            f'<th>Note</th></tr></thead><tbody>{rows}</tbody></table>')


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"
