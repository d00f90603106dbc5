"""The Judge pages: blind A/B preference judgements of two systems of a free-text run (:mod:`lmtune.guidance.judging`).

* ``GET /judge``: the rounds (run, the asker's progress; for the owner the systems, answers and a results link) and
  the owner's form to create one.
* ``GET /judge/<round>``: one input at a time, its two outputs as "A" and "B" (``judge.js``: keys A/B/T and
  1/2/0, an optional reason); the next item shows once the answer is committed.
* ``GET /judge/<round>/results`` (owner): the win rate with its interval, each annotator's counts, the exports.

API: ``GET /api/judge/rounds``; ``POST /api/judge/rounds {run, system_a, system_b[, name]}`` (owner);
``GET /api/judge/<round>/next``; ``POST /api/judge/<round>/answer {index, choice, reason}`` (``choice`` as shown:
``A``, ``B`` or ``tie``; returns the next item); ``GET /api/judge/<round>/answers`` (the asker's own answers only);
``GET /api/judge/<round>/results``, ``GET /api/judge/<round>/pairs`` (JSONL) and ``POST /api/judge/<round>/report``
(re-render the run's ``report.html``), the owner's. An annotator asking for an owner's page or endpoint gets 403;
an unknown round is 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response

from lmtune import atomic
from lmtune.errors import UserError
from lmtune.guidance import judge_results, judging
from lmtune.run_dir import RunDir
from lmtune.studio import identity, judge_html, layout
from lmtune.studio.handling import json_body
from lmtune.studio.index import run_dir

router = APIRouter()


def _owner(request: Request) -> None:
    identity.require_owner(request, "only the studio's owner sees the systems' names, results and exports, "
                                    "and creates rounds")


def _connect(request: Request):
    return judging.opened(identity.database(request))


def _rounds(request: Request) -> tuple[list[dict[str, Any]], bool]:
    owner, who = identity.owner(request), identity.asker(request)
    with _connect(request) as conn:
        found = []
        for r in judging.rounds(conn):
            row = {**r.public(owner), "done": judging.progress(conn, r.name, who)["done"] if who else 0}
            if owner:
                row["answers"] = judging.count_answers(conn, r.name)
            found.append(row)
    return found, owner


def _judgeable_runs(request: Request) -> list[dict[str, Any]]:
    """The runs of the folder whose answers are free text, with the systems that have predictions (two or more)."""
    studio = request.app.state.studio
    out = []
    for row in studio.index.rows():
        if judging.free_text(row.get("task")):
            systems = RunDir(studio.runs / row["name"]).prediction_systems()
            if len(systems) >= 2:
                out.append({"name": row["name"], "systems": systems})
    return out


@router.get("/judge", response_class=HTMLResponse)
def judge_index(request: Request) -> str:
    rounds, owner = _rounds(request)
    runs = _judgeable_runs(request) if owner else []
    body = ('<h1>Judge</h1><p class="meta">Blind A/B judgements: which of two outputs for the same input is better. '
            "Open a round to judge its items one at a time.</p>" + judge_html.rounds_table(rounds, owner)
            + (judge_html.new_round_form(runs) if owner else ""))
    return layout.page("Judge", body, "/judge", ("judge.js",), {"view": "index", "runs": runs})


@router.get("/judge/{name}", response_class=HTMLResponse)
def judge_round(request: Request, name: str) -> str:
    who = identity.annotator(request)
    with _connect(request) as conn:
        judging.get(conn, name)
        data = {"view": "judge", "round": name, "item": judging.next_item(conn, name, who),
                "progress": judging.progress(conn, name, who)}
    return layout.page(f"Judge {name}", judge_html.judging_view(name), "/judge", ("judge.js",), data)


@router.get("/judge/{name}/results", response_class=HTMLResponse)
def results_page(request: Request, name: str) -> str:
    _owner(request)
    with _connect(request) as conn:
        found = judge_results.results(conn, name)
    return layout.page(f"Results {name}", judge_html.results_view(found), "/judge", ("judge.js",),
                       {"view": "results", "round": name})


@router.get("/api/judge/rounds")
def api_rounds(request: Request) -> dict[str, Any]:
    return {"rounds": _rounds(request)[0]}


@router.post("/api/judge/rounds")
async def api_create(request: Request):
    _owner(request)
    body = await json_body(request)
    run_name = body.get("run")
    if not isinstance(run_name, str) or not run_name:
        raise UserError("name the run to judge: {\"run\": ..., \"system_a\": ..., \"system_b\": ...}", source="run")
    run = run_dir(request.app.state.studio.runs, run_name)

    def create() -> judging.Round:
        with _connect(request) as conn:
            return judging.create(conn, run, run_name, body.get("system_a"), body.get("system_b"), body.get("name"))
    created = await run_in_threadpool(create)
    return JSONResponse({**created.public(True), "url": f"/judge/{created.name}"}, status_code=201)


@router.get("/api/judge/{name}/next")
def api_next(request: Request, name: str) -> dict[str, Any]:
    who = identity.annotator(request)
    with _connect(request) as conn:
        judging.get(conn, name)
        return {"item": judging.next_item(conn, name, who), "progress": judging.progress(conn, name, who)}


@router.post("/api/judge/{name}/answer")
async def api_answer(request: Request, name: str) -> dict[str, Any]:
    who = identity.annotator(request)
    body = await json_body(request)

    def answer() -> dict[str, Any]:
        with _connect(request) as conn:
            judging.answer(conn, name, who, body.get("index"), body.get("choice"), body.get("reason"))
            out = {"ok": True, "item": judging.next_item(conn, name, who),
                   "progress": judging.progress(conn, name, who)}
            try:  # the answer is committed either way; the run's file follows it
                judge_results.write_into_run(conn, name)
            except OSError as exc:
                out["note"] = f"human_eval.json could not be written into the run: {exc}"
            return out
    return await run_in_threadpool(answer)


@router.get("/api/judge/{name}/answers")
def api_answers(request: Request, name: str, history: str = "0") -> dict[str, Any]:
    who = identity.annotator(request)
    with _connect(request) as conn:
        judging.get(conn, name)
        return {"annotator": who, "answers": judging.own_answers(conn, name, who, history not in ("", "0"))}


@router.get("/api/judge/{name}/results")
def api_results(request: Request, name: str) -> dict[str, Any]:
    _owner(request)
    with _connect(request) as conn:
        return judge_results.results(conn, name)


@router.get("/api/judge/{name}/pairs")
def api_pairs(request: Request, name: str) -> Response:
    _owner(request)
    with _connect(request) as conn:
        pairs, left_out = judge_results.pairs(conn, name)
    text = atomic.jsonl(pairs)
    headers = {"Content-Disposition": f'attachment; filename="{name}-pairs.jsonl"',
               "X-Lmtune-Left-Out": "; ".join(f"{k}={v}" for k, v in left_out.items())}
    return Response(text, media_type="application/x-ndjson", headers=headers)


@router.post("/api/judge/{name}/report")
async def api_report(request: Request, name: str) -> dict[str, Any]:
    _owner(request)

    def update() -> str:
        with _connect(request) as conn:
            return str(judge_results.update_report(conn, name))
    try:
        path = await run_in_threadpool(update)
    except OSError as exc:
        raise UserError(f"the run's report could not be written: {exc}", source="run") from None
    return {"ok": True, "report": path}
