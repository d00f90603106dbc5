"""The New-run page, and the API that starts, cancels and resumes runs and shows their console.

``GET /new`` (or ``/new?from=<run>``, starting from that run's saved recipe) has a recipe picker over the
recipes folder, an editor, the problems of the last check (each with its key path) and the studio's queue;
``new.js`` drives it. Runs go through :class:`~lmtune.studio.queue.RunQueue` (``studio.queue``); an app built
without one (no server, as in some tests) answers the requests that change something with 503. A recipe
with problems answers 400 with all of them: ``{"error": {...}, "problems": [{"key", "message"}, ...]}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from lmtune.errors import UserError
from lmtune.studio import layout, recipes
from lmtune.studio.index import run_dir
from lmtune.studio.queue import Conflict, free_name

router = APIRouter()
esc = layout.esc


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "code": status}, **extra}, status_code=status)


def _problems(exc: UserError) -> JSONResponse:
    problems = [{"key": key, "message": message} for key, message in exc.problems]
    return _error(400, str(exc), problems=problems)


def _no_queue() -> JSONResponse:
    return _error(503, "this studio has no run queue (the app was built without `lmtune studio`'s server), "
                  "so it cannot start, cancel or resume runs")


async def _json(request: Request) -> dict[str, Any]:
    """The request's JSON object body, with a string ``text``.

    Raises:
        UserError: not a JSON object, or ``text`` (the recipe) missing or not a string.
    """
    try:
        body = await request.json()
    except ValueError:
        raise UserError("the request body is not JSON", source="body") from None
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise UserError('expected {"text": "<the recipe as YAML>"}', source="text")
    source = body.get("source")
    return {"text": body["text"], "source": source if isinstance(source, str) else None}


@router.get("/api/recipes")
def api_recipes(request: Request) -> dict[str, Any]:
    folder = request.app.state.studio.recipes
    return {"folder": str(folder) if folder is not None else None, "recipes": recipes.listing(folder)}


@router.get("/api/recipes/{name}")
def api_recipe(request: Request, name: str):
    try:
        return {"name": name, "text": recipes.read(request.app.state.studio.recipes, name)}
    except recipes.RecipeNotFound:
        return _error(404, f"no recipe file called {name[:200]!r} in the recipes folder")
    except UserError as exc:
        return _problems(exc)


@router.post("/api/validate")
async def api_validate(request: Request):
    try:
        body = await _json(request)
        recipe = await run_in_threadpool(recipes.check, body["text"])
    except UserError as exc:
        return _problems(exc)
    queue = request.app.state.studio.queue
    name = (queue.free_name(recipe["name"]) if queue is not None
            else free_name(request.app.state.studio.runs, recipe["name"], set()))
    return {"ok": True, "name": name}


@router.post("/api/runs")
async def api_start(request: Request):
    queue = request.app.state.studio.queue
    if queue is None:
        return _no_queue()
    try:
        body = await _json(request)
        name = await run_in_threadpool(queue.submit, body["text"], body["source"])
    except UserError as exc:
        return _problems(exc)
    return JSONResponse({"name": name, "url": f"/runs/{name}"}, status_code=201)


@router.post("/api/runs/{name}/cancel")
def api_cancel(request: Request, name: str):
    queue = request.app.state.studio.queue
    if queue is None:
        return _no_queue()
    try:
        if not queue.cancel(name):  # may wait a few seconds for a running worker to end
            return _error(409, f"{name} is neither queued nor running")
    except Conflict as exc:
        return _error(409, str(exc))
    return {"name": name, "status": "cancelled"}


@router.post("/api/runs/{name}/resume")
def api_resume(request: Request, name: str):
    queue = request.app.state.studio.queue
    if queue is None:
        return _no_queue()
    try:
        status = queue.resume(name)
    except Conflict as exc:
        return _error(409, str(exc))
    except UserError as exc:
        return _problems(exc)
    return {"name": name, "status": status}


@router.get("/api/runs/{name}/console")
def api_console(request: Request, name: str, offset: int = 0):
    queue = request.app.state.studio.queue
    if queue is None:
        return _error(404, f"{name[:200]!r} has no console here: this studio has no run queue")
    return queue.console(name, offset)


@router.get("/api/queue")
def api_queue(request: Request) -> dict[str, Any]:
    queue = request.app.state.studio.queue
    return {"jobs": queue.jobs() if queue is not None else []}


@router.get("/new", response_class=HTMLResponse)
def new_page(request: Request) -> str:
    studio = request.app.state.studio
    origin = request.query_params.get("from")
    text = ""
    if origin:
        try:
            text = run_dir(studio.runs, origin).recipe.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
    queue = studio.queue
    body = (f'<h1>New run</h1>{_picker(studio.recipes, origin)}'
            f'<textarea id="recipe-text" rows="26" spellcheck="false" autocomplete="off" '
            f'aria-label="Recipe (YAML)" placeholder="name: my-run&#10;model: ...&#10;task: ...">{esc(text)}</textarea>'
            '<div class="toolbar"><button type="button" id="validate">Validate</button>'
            f'<button type="button" id="start" class="primary"{"" if queue else " disabled"}>Start run</button>'
            '<span id="verdict" class="meta" role="status"></span></div>'
            '<ul id="problems" class="errors"></ul>'
            '<h2>Queue</h2><p class="meta">Runs start one at a time, in the order they were queued; the studio '
            'keeps the queue across restarts.</p>'
            + ("" if queue else '<p class="note">This studio has no run queue: start it with '
               '<code>lmtune studio</code> to run recipes.</p>')
            + '<table id="queue" class="runs"><thead><tr><th>Run</th><th>Status</th><th>Queued</th>'
              '<th>Ended</th><th>Error</th><th></th></tr></thead><tbody></tbody></table>'
              '<p id="queue-empty" class="meta" hidden>No runs started from the studio yet.</p>')
    data = {"folder": str(studio.recipes) if studio.recipes is not None else None,
            "recipes": recipes.listing(studio.recipes), "from": origin,
            "jobs": queue.jobs() if queue is not None else []}
    return layout.page("New run", body, "/new", ("new.js",), data)


def _picker(folder, origin: str | None) -> str:
    """The recipe file picker, or why there is none."""
    start = f'<p class="meta">Starting from the recipe of run <code>{esc(origin)}</code>.</p>' if origin else ""
    if folder is None:
        return (start + '<p class="note" id="no-recipes">No recipes folder is configured: start the studio with '
                '<code>lmtune studio --recipes DIR</code> to pick recipe files here, or write a recipe below.</p>')
    names = recipes.listing(folder)
    options = "".join(f'<option value="{esc(n)}">{esc(n)}</option>' for n in names)
    empty = "" if names else ' <span class="meta">(no .yaml files in it)</span>'
    return (f'{start}<div class="toolbar"><label for="recipe-file">Recipe file in <code>{esc(folder)}</code></label>'
            f'<select id="recipe-file"><option value="">choose a recipe…</option>{options}</select>{empty}</div>')
