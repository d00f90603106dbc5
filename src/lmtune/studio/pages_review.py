"""Review of gold labels: marking a record's label wrong, the corrections made, and their export for a recipe.

The control ("gold is wrong") is on the Run page's predictions browser (test records) and on ``/review/<run>``
(a run's training records); both post to the run's corrections. The server reads the record's input text and gold
label from the run's own ``data/<split>.jsonl`` (:mod:`lmtune.studio.run_records`), never from the request.

* ``POST /api/runs/<run>/corrections`` ``{split, index, corrected, reason}``: 201 with the correction;
* ``GET /api/runs/<run>/corrections?split=``: the run's live corrections;
* ``GET /api/runs/<run>/records?split=&q=&offset=&limit=``: one page of a split's records ``{index, text, label}``;
* ``GET /review?run=``: every correction, with a withdraw button; ``GET /review/<run>?split=train``: the records;
* ``GET /api/review/corrections?run=`` (JSON), ``POST /api/review/corrections/<id>/withdraw`` (the annotator who
  made it, or the owner; 403 otherwise), ``GET /api/review/export?run=``: ``corrections.jsonl``, what
  ``data.corrections`` reads.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from lmtune import atomic
from lmtune.data import corrections as data_corrections
from lmtune.errors import UserError
from lmtune.guidance import corrections, db
from lmtune.report import html
from lmtune.studio import identity, layout, run_records, run_view
from lmtune.studio.handling import json_body
from lmtune.studio.index import run_dir

router = APIRouter()
esc = layout.esc
EXCERPT = 160
PUBLIC = ("id", "run", "split", "record", "text", "label", "corrected", "reason", "annotator", "created_at",
          "withdrawn_at", "withdrawn_by")
OWNER = "owner"  # who the studio's owner is in a correction, on a studio with a token


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in PUBLIC}


def _who(request: Request) -> str:
    """Who is answering: the annotator (``local`` on a studio without a token), or ``owner`` for the studio's owner
    on a studio with one."""
    return identity.asker(request, owner_as=OWNER)


def _labelled(request: Request, name: str):
    """The run called ``name`` and what the Run page knows of it, refused unless its answers are labels."""
    run = run_dir(request.app.state.studio.runs, name)
    found = run_view.light(run)
    if not found.labelled or not found.labels:
        raise UserError(f"a {found.task or 'run without a task'} run has no labels to correct here; correct "
                        "generation targets in a data.corrections file", source="run")
    return run, found


def _correct(request: Request, name: str, body: dict[str, Any]) -> dict[str, Any]:
    run, found = _labelled(request, name)
    split, corrected, reason = body.get("split", "test"), body.get("corrected"), body.get("reason") or ""
    record = run_records.record(run, split, body.get("index"))
    text, label = data_corrections.of_record(record, found.task)
    if corrected not in found.labels:
        raise UserError(f"corrected must be one of the run's labels: {', '.join(found.labels)}", source="corrected")
    who = _who(request)
    with db.opened(identity.database(request), corrections.SCHEMA) as conn:
        return _public(corrections.add(conn, run=name, split=split, record=body["index"], text=text,
                                       label=str(label), corrected=corrected, reason=reason, annotator=who))


@router.post("/api/runs/{name}/corrections")
async def api_correct(request: Request, name: str):
    body = await json_body(request, not_object='expected {"split", "index", "corrected", "reason"}')
    return JSONResponse(await run_in_threadpool(_correct, request, name, body), status_code=201)


@router.get("/api/runs/{name}/corrections")
def api_run_corrections(request: Request, name: str, split: str | None = None) -> dict[str, Any]:
    run_dir(request.app.state.studio.runs, name)  # 404 for a run that is not there
    with db.opened(identity.database(request), corrections.SCHEMA) as conn:
        return {"corrections": [_public(r) for r in corrections.listed(conn, name, split or None)]}


@router.get("/api/runs/{name}/records")
def api_records(request: Request, name: str, split: str = "train", q: str = "", offset: str = "0",
                limit: str = "50") -> dict[str, Any]:
    run, found = _labelled(request, name)
    return run_records.page(run, split, found.task, q, _int(offset, "offset"), _int(limit, "limit"))


@router.get("/api/review/corrections")
def api_corrections(request: Request, run: str | None = None) -> dict[str, Any]:
    with db.opened(identity.database(request), corrections.SCHEMA) as conn:
        return {"corrections": [_public(r) for r in corrections.listed(conn, run or None, withdrawn=True)]}


@router.post("/api/review/corrections/{correction}/withdraw")
def api_withdraw(request: Request, correction: int):
    who, owner = _who(request), identity.owner(request)
    with db.opened(identity.database(request), corrections.SCHEMA) as conn:
        return _public(corrections.withdraw(conn, correction, who, owner))  # NotFound 404, NotYours 403 (app)


@router.get("/api/review/export")
def api_export(request: Request, run: str | None = None) -> Response:
    with db.opened(identity.database(request), corrections.SCHEMA) as conn:
        rows = corrections.export(conn, run or None)
    return Response(atomic.jsonl(rows), media_type="application/jsonl",
                    headers={"Content-Disposition": 'attachment; filename="corrections.jsonl"'})


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name} must be a whole number, not {value[:50]!r}", source=name) from None


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request, run: str | None = None) -> str:
    with db.opened(identity.database(request), corrections.SCHEMA) as conn:
        rows = corrections.listed(conn, run or None, withdrawn=True)
        runs = sorted({r["run"] for r in corrections.listed(conn, withdrawn=True)})
    options = "".join(f'<option value="{esc(r)}"{" selected" if r == run else ""}>{esc(r)}</option>' for r in runs)
    export = "/api/review/export" + (f"?run={quote(run)}" if run else "")
    body = ('<h1>Corrections</h1><p class="meta">gold labels marked wrong, from the Run page\'s predictions and a '
            "run's training records; the export is a <code>data.corrections</code> file for the next recipe</p>"
            f'<div class="toolbar"><label>Run <select id="review-run"><option value="">all runs</option>{options}'
            f'</select></label><a id="review-export" href="{esc(export)}" download="corrections.jsonl">'
            f"Export corrections.jsonl</a><span class=\"meta\">{sum(r['withdrawn_at'] is None for r in rows)} live"
            '</span><span id="review-message" class="warning" hidden></span></div>' + _table(rows))
    return layout.page("Corrections", body, "/review", ("review.js",), {"page": "corrections"})


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="meta" id="no-corrections">no corrections yet</p>'
    head = "".join(f"<th>{h}</th>" for h in ("run", "split", "record", "text", "gold → corrected", "who", "when",
                                             "reason", ""))
    body = "".join(_row(r) for r in rows)
    return f'<div class="wide"><table id="corrections" class="review"><thead><tr>{head}</tr></thead>' \
           f"<tbody>{body}</tbody></table></div>"


def _row(r: dict[str, Any]) -> str:
    text = r["text"] if len(r["text"]) <= EXCERPT else r["text"][:EXCERPT] + "…"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"]))
    action = (f'<button type="button" data-withdraw="{r["id"]}">Withdraw</button>' if r["withdrawn_at"] is None
              else f'<span class="meta">withdrawn by {esc(r["withdrawn_by"])}</span>')
    link = f'<a href="/runs/{esc(quote(r["run"]))}">{esc(r["run"])}</a>'
    return (f'<tr data-correction="{r["id"]}"{" class=withdrawn" if r["withdrawn_at"] else ""}><td>{link}</td>'
            f'{html.cell(r["split"])}<td class="num">{r["record"]}</td><td>{esc(text)}</td>'
            f'<td>{esc(r["label"])} → <strong>{esc(r["corrected"])}</strong></td>{html.cell(r["annotator"])}'
            f"<td>{esc(when)}</td>{html.cell(r['reason'] or None)}<td>{action}</td></tr>")


@router.get("/review/{name}", response_class=HTMLResponse)
def records_page(request: Request, name: str, split: str = "train") -> str:
    run, found = _labelled(request, name)
    if split not in run_records.SPLITS:
        raise UserError(f"split must be one of {', '.join(run_records.SPLITS)}", source="split")
    first = run_records.page(run, split, found.task)
    tabs = " · ".join(f'<a href="/review/{esc(quote(name))}?split={s}"{" class=active" if s == split else ""}>{s}</a>'
                      for s in run_records.SPLITS if run.data.split(s).is_file())
    body = (f'<h1>{esc(name)} <small>{esc(split)} records</small></h1>'
            f'<p class="meta">mark a gold label wrong: the correction names this record of the run\'s '
            f'data/{esc(split)}.jsonl · {tabs} · <a href="/runs/{esc(quote(name))}">the run</a> · '
            f'<a href="/review?run={esc(quote(name))}">its corrections</a></p>'
            '<div class="toolbar"><input type="search" id="records-q" placeholder="Search text and labels">'
            '<button type="button" id="records-prev">Previous</button><span id="records-count" class="meta"></span>'
            '<button type="button" id="records-next">Next</button></div>'
            '<div class="wide"><table id="records" class="examples"><thead></thead><tbody></tbody></table></div>')
    data = {"page": "records", "name": name, "split": split, "labels": found.labels, "records": first}
    return layout.page(f"{name}: {split} records", body, "/review", ("corrections.js", "review.js"), data)
