"""The studio's FastAPI application: shared state, the guard on every request, and the pages' routers.

Each page module (``pages_*``) has a ``router`` with its HTML page and its JSON API under ``/api``; a
handler finds the studio's state as ``request.app.state.studio`` (:class:`Studio`). Responses carry a
Content-Security-Policy that allows scripts from this server only, so even text that escaped escaping
could not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from lmtune.errors import UserError
from lmtune.studio import (
    layout,
    pages_active,
    pages_compare,
    pages_curve,
    pages_new,
    pages_run,
    pages_runs,
    pages_studies,
    pages_tune,
    security,
    studies,
)
from lmtune.studio.index import Index, RunNotFound

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


@dataclass
class Studio:
    """What every request handler shares.

    Args:
        runs: the runs folder.
        recipes: the folder the New-run page lists recipes from (None: none listed).
        state_dir: the studio's own files (its SQLite database, job logs).
        token: required on every request when set.
        hosts: the Host names a request may name (empty: any).
        queue: the run queue (:mod:`lmtune.studio.queue`), None until the server starts it.
    """

    runs: Path
    recipes: Path | None = None
    state_dir: Path | None = None
    token: str | None = None
    hosts: set[str] = field(default_factory=set)
    queue: Any = None
    index: Index = field(init=False)

    def __post_init__(self) -> None:
        self.runs = Path(self.runs)
        self.state_dir = Path(self.state_dir) if self.state_dir else self.runs / ".studio"
        self.index = Index(self.runs)


def create_app(studio: Studio) -> FastAPI:
    app = FastAPI(title="lmtune studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio = studio

    @app.middleware("http")
    async def guard(request: Request, call_next):
        refused = security.check(request, studio.token, studio.hosts) or studies.read_only(request)
        response = refused or security.signed_in(request, studio.token)
        if response is None:
            response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(RunNotFound)
    async def not_found(request: Request, exc: RunNotFound):
        message = f"no run called {str(exc)[:200]!r} in {studio.runs}"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": {"message": message, "code": 404}}, status_code=404)
        return HTMLResponse(layout.message_page("Run not found", message), status_code=404)

    @app.exception_handler(studies.StudyNotFound)
    async def study_not_found(request: Request, exc: studies.StudyNotFound):
        message = f"{exc} in {studio.runs}"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": {"message": message, "code": 404}}, status_code=404)
        return HTMLResponse(layout.message_page("Study not found", message), status_code=404)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"error": {"message": str(exc), "param": exc.source, "code": 400}}, status_code=400)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (pages_runs, pages_run, pages_compare, pages_new, pages_studies, pages_tune, pages_curve,
                   pages_active):
        app.include_router(module.router)
    return app
