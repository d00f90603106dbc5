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
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from lmtune.errors import UserError
from lmtune.guidance import corrections, judging, labelling
from lmtune.studio import (
    identity,
    pages_active,
    pages_compare,
    pages_curve,
    pages_judge,
    pages_label,
    pages_new,
    pages_review,
    pages_run,
    pages_runs,
    pages_studies,
    pages_tune,
    security,
    studies,
)
from lmtune.studio.handling import error_response
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
        refused = (security.check(request, studio.token, studio.hosts, lambda: identity.admits(studio, request))
                   or studies.read_only(request))
        response = refused or security.signed_in(request, studio.token) or identity.signed_in(request)
        if response is None:
            response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    _handle_errors(app, studio)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (pages_runs, pages_run, pages_compare, pages_new, pages_studies, pages_tune, pages_curve,
                   pages_active, pages_judge, pages_review, pages_label):
        app.include_router(module.router)
    return app


#: Errors a handler raises, answered in one place: (exception, status, page title, message of the exception).
ANSWERED = (
    (identity.NotAnnotator, 401, "Who is labelling?", str),
    (identity.OwnerOnly, 403, "For the studio's owner", str),
    (labelling.QueueNotFound, 404, "Labelling", lambda exc: f"no labelling queue called {str(exc)[:100]!r}"),
    (labelling.NotHanded, 409, "Labelling", str),
    (judging.RoundNotFound, 404, "Round not found", str),
    (corrections.NotFound, 404, "Correction not found", str),
    (corrections.NotYours, 403, "Not your correction", str),
)


def _handle_errors(app: FastAPI, studio: Studio) -> None:
    """A missing run, study, queue, round or correction is a 404, a missing annotator a 401, an annotator on the
    owner's route or someone else's correction a 403, an answer to a record not handed out a 409, a UserError a
    400: JSON under /api, a page elsewhere."""

    @app.exception_handler(RunNotFound)
    async def not_found(request: Request, exc: RunNotFound):
        return error_response(request, 404, f"no run called {str(exc)[:200]!r} in {studio.runs}", "Run not found")

    @app.exception_handler(studies.StudyNotFound)
    async def study_not_found(request: Request, exc: studies.StudyNotFound):
        return error_response(request, 404, f"{exc} in {studio.runs}", "Study not found")

    for kind, status, title, message in ANSWERED:
        async def answer(request: Request, exc: Exception, status=status, title=title, message=message):
            return error_response(request, status, message(exc), title)
        app.add_exception_handler(kind, answer)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"error": {"message": str(exc), "param": exc.source, "code": 400}}, status_code=400)
