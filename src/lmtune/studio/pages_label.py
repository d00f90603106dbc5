"""Labelling: the queue list, the labelling page, the owner's overview, and their JSON API.

``GET /label`` lists the queues (and, for the studio's owner, forms to create a queue and add an annotator);
``GET /label/<queue>`` shows one record at a time to the annotator asking (``label.js`` drives the keys);
``GET /label/<queue>/overview`` is the owner's: progress per annotator, agreement, flagged records, the export.
Who answers comes from :func:`lmtune.studio.identity.annotator`; every answer an annotator reads or changes is
their own. The owner's endpoints answer an annotator 403. An unknown queue is a 404, an answer to a record the
annotator was not handed a 409, bad input a 400 (``UserError``); each ``{"error": {"message", "code"}}``, answered
by :mod:`lmtune.studio.app`'s error handlers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from lmtune import atomic
from lmtune.errors import UserError
from lmtune.guidance import agreement, annotators, db, label_export, label_pool, labelling, retrain
from lmtune.studio import identity, label_html, recipes
from lmtune.studio.handling import json_body
from lmtune.studio.index import RunNotFound, run_dir

router = APIRouter()


def _owner(request: Request, what: str) -> None:
    identity.require_owner(request, f"only the studio's owner can {what}; an annotator's link opens labelling only")


def _connect(request: Request, schema: str = labelling.SCHEMA):
    return db.opened(identity.database(request), schema)


def _pool_path(studio, given: Any) -> Path:
    """The pool file ``given`` names, inside the runs folder or the recipes folder (relative to either).

    Raises:
        UserError: no path, or one that leads outside both folders.
    """
    if not isinstance(given, str) or not given.strip():
        raise UserError("give the pool file's path, relative to the runs folder or the recipes folder",
                        source="pool")
    roots = [Path(r).resolve() for r in (studio.runs, studio.recipes) if r is not None]
    inside = []
    for root in roots:
        try:
            path = (root / given.strip()).resolve()
        except (OSError, ValueError, RuntimeError):
            continue
        if path.is_relative_to(root):
            if path.is_file():
                return path
            inside.append(path)
    if not inside:
        raise UserError(f"the pool file must be inside the runs folder ({studio.runs})"
                        + (f" or the recipes folder ({studio.recipes})" if studio.recipes else ""), source="pool")
    return inside[0]  # not there: reading it says so


def _recipe_path(studio, name: Any) -> Path | None:
    if name in (None, ""):
        return None
    if not isinstance(name, str) or name not in recipes.listing(studio.recipes):
        raise UserError(f"no recipe file called {str(name)[:100]!r} in the recipes folder", source="recipe")
    return Path(studio.recipes) / name


def queue_rows(request: Request) -> list[dict[str, Any]]:
    """Every queue's row: with who answered for the owner, with the asker's own progress for an annotator."""
    who, everyone = identity.asker(request), identity.owner(request)
    with _connect(request) as conn:
        return [labelling.summary(conn, name, who, everyone) for name in labelling.names(conn)]


@router.get("/api/label/queues")
def api_queues(request: Request) -> dict[str, Any]:
    return {"queues": queue_rows(request)}


@router.post("/api/label/queues")
async def api_create(request: Request):
    _owner(request, "create a labelling queue")
    body, studio = await json_body(request), request.app.state.studio
    settings = label_pool.settings(body.get("name"), _recipe_path(studio, body.get("recipe")), body.get("labels"),
                                   body.get("task"), body.get("guidelines"), body.get("overlap", 0.0))
    pool = _pool_path(studio, body.get("pool"))

    def create() -> dict[str, Any]:
        with _connect(request) as conn:
            labelling.create(conn, pool, settings)
            return labelling.summary(conn, settings.name, everyone=True)

    row = await run_in_threadpool(create)
    return JSONResponse({"queue": row, "url": f"/label/{settings.name}"}, status_code=201)


@router.get("/api/label/{queue}/next")
def api_next(request: Request, queue: str) -> dict[str, Any]:
    who = identity.annotator(request)
    with _connect(request) as conn:
        return labelling.next_record(conn, queue, who)


@router.post("/api/label/{queue}/answer")
async def api_answer(request: Request, queue: str):
    who, body = identity.annotator(request), await json_body(request)
    label = body.get("text") if "text" in body else body.get("label")

    def answer() -> dict[str, Any]:
        with _connect(request) as conn:
            given = labelling.answer(conn, queue, who, body.get("index"), body.get("kind", "label"), label,
                                     body.get("note"))
            return {"answer": given, **labelling.next_record(conn, queue, who)}

    return await run_in_threadpool(answer)


@router.post("/api/label/{queue}/undo")
def api_undo(request: Request, queue: str) -> dict[str, Any]:
    who = identity.annotator(request)
    with _connect(request) as conn:
        return labelling.undo(conn, queue, who)


@router.get("/api/label/{queue}/mine")
def api_mine(request: Request, queue: str) -> dict[str, Any]:
    who = identity.annotator(request)
    with _connect(request) as conn:
        labelling.find(conn, queue)
        return {"annotator": who, "answers": labelling.answers(conn, queue, who),
                "progress": labelling.progress(conn, queue, who)}


@router.get("/api/label/{queue}/agreement")
def api_agreement(request: Request, queue: str) -> dict[str, Any]:
    _owner(request, "see agreement between annotators")
    with _connect(request) as conn:
        return agreement.of_queue(conn, queue)


@router.get("/api/label/{queue}/export")
def api_export(request: Request, queue: str) -> Response:
    _owner(request, "export a queue's labels")
    with _connect(request) as conn:
        text = atomic.jsonl(label_export.export(conn, queue))
    return Response(text, media_type="application/x-ndjson",
                    headers={"Content-Disposition": f'attachment; filename="{queue}-labels.jsonl"'})


@router.post("/api/label/{queue}/retrain")
async def api_retrain(request: Request, queue: str):
    """A run of the queue's recipe with its labels added to the train split (``data.add_train``), through the
    studio's run queue; the answer names it and the Compare page of the recipe's own run against it."""
    _owner(request, "retrain from a queue")
    body, studio = await json_body(request), request.app.state.studio
    min_new = body.get("min_new", retrain.DEFAULT_MIN_NEW)
    if not isinstance(min_new, int) or isinstance(min_new, bool) or min_new < 1:
        raise UserError("min_new is a whole number of new labelled records, at least 1", source="min_new")
    if studio.queue is None:
        raise UserError("this studio has no run queue (start it with `lmtune studio`)", source="queue")

    def start() -> dict[str, Any]:
        with _connect(request, labelling.SCHEMA + retrain.SCHEMA) as conn:
            found = labelling.find(conn, queue)
            path, count = retrain.labels_file(conn, queue, Path(studio.state_dir) / "labels", min_new)
            text, recipe_name = retrain.recipe_text(Path(found.settings.recipe), queue, path,
                                                    len(retrain.previous(conn, queue)) + 1)
            base = _base_run(studio, body.get("base_run"), recipe_name)
            name = studio.queue.submit(text, source=f"labelling queue {queue}")
            retrain.record(conn, queue, name, base, path, count)
        compare = f"/compare?run={base}&run={name}" if base else f"/runs/{name}"
        return {"run": name, "base_run": base, "labels": count, "labels_file": path.name, "url": compare}

    return JSONResponse(await run_in_threadpool(start), status_code=201)


def _base_run(studio, given: Any, recipe_name: str) -> str | None:
    """The run the retrained one is compared with: ``given``, else the recipe's own run when the folder has one.

    Raises:
        UserError: ``given`` is not a run name.
        RunNotFound: no run called ``given``.
    """
    if given is not None:
        if not isinstance(given, str):
            raise UserError("base_run is the name of a run in the runs folder", source="base_run")
        run_dir(studio.runs, given)
        return given
    try:
        run_dir(studio.runs, recipe_name)
    except RunNotFound:
        return None
    return recipe_name


@router.get("/api/annotators")
def api_annotators(request: Request) -> dict[str, Any]:
    _owner(request, "list annotators")
    with _connect(request, annotators.SCHEMA) as conn:
        return {"annotators": annotators.names(conn)}


@router.post("/api/annotators")
async def api_add_annotator(request: Request):
    _owner(request, "add annotators")
    body = await json_body(request)

    def add() -> str:
        with _connect(request, annotators.SCHEMA) as conn:
            return annotators.create(conn, body.get("name"))

    token = await run_in_threadpool(add)
    link = f"{str(request.base_url).rstrip('/')}/label?{identity.QUERY}={token}"
    return JSONResponse({"name": body["name"], "token": token, "link": link}, status_code=201)


@router.get("/label", response_class=HTMLResponse)
def label_page(request: Request):
    studio, owner = request.app.state.studio, identity.owner(request)
    rows = queue_rows(request)
    names = []
    if owner:
        with _connect(request, annotators.SCHEMA) as conn:
            names = annotators.names(conn)
    return label_html.queues_page(rows, owner, names, recipes.listing(studio.recipes), studio)


@router.get("/label/{queue}", response_class=HTMLResponse)
def queue_page(request: Request, queue: str):
    who = identity.annotator(request)
    with _connect(request) as conn:
        found = labelling.find(conn, queue)
        return label_html.label_page(found, who, labelling.next_record(conn, queue, who))


@router.get("/label/{queue}/overview", response_class=HTMLResponse)
def overview_page(request: Request, queue: str):
    _owner(request, "see a queue's overview")
    with _connect(request, labelling.SCHEMA + retrain.SCHEMA) as conn:
        found = labelling.find(conn, queue)
        return label_html.overview_page(found, labelling.summary(conn, queue, everyone=True),
                                        labelling.by_annotator(conn, queue), agreement.of_queue(conn, queue),
                                        [a for a in labelling.answers(conn, queue) if a["kind"] == "flag"],
                                        retrain.previous(conn, queue))
