"""The HTTP API: an OpenAI-compatible FastAPI app over the served models and the job store.

``/v1/...`` follows the OpenAI API (models, chat completions, completions, files, fine-tuning
jobs) so code written for it runs unchanged; ``/health`` and ``/metrics`` (Prometheus) are for
operators and need no key. With an ``upstream`` (``--engine vllm``) the model list and completions
are answered by that server (see :mod:`lmtune.serve.upstream`); files and jobs stay here.
"""

from __future__ import annotations

import contextlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from lmtune import assets
from lmtune.serve import errors
from lmtune.serve.engine.models import Registry, Served
from lmtune.serve.engine.task import SUFFIX
from lmtune.serve.http import files, fine_tuning, inference, limits
from lmtune.serve.http.metrics import Metrics
from lmtune.serve.jobs.store import Store
from lmtune.serve.jobs.supervisor import Supervisor
from lmtune.serve.upstream import Upstream


@dataclass
class ServerState:
    """Everything a request handler needs, in ``app.state.lmtune``."""

    registry: Registry
    metrics: Metrics
    store: Store
    supervisor: Supervisor
    state_dir: Path
    api_key: str | None = None
    default_max_tokens: int = 256
    upstream: Upstream | None = None  # the server that answers inference requests, if not this one
    allow_python_graders: bool = False  # accept jobs whose python grader's code runs on this machine

    def names(self) -> list[str]:
        """The names clients may ask for."""
        return self.upstream.names() if self.upstream is not None else self.registry.names()

    @property
    def files_dir(self) -> Path:
        return self.state_dir / "files"

    @property
    def jobs_dir(self) -> Path:
        return self.state_dir / "jobs"

    async def close(self) -> None:
        """Stop the engines and close the connections to the upstream."""
        self.registry.close()
        if self.upstream is not None:
            await self.upstream.aclose()

    def served(self, name: str) -> Served:
        served = self.registry.get(name)
        if served is None:
            raise errors.model_not_found(name)
        return served

    def base_ref(self, name: str) -> str | None:
        """The model reference a job named ``name`` trains on: a served base, an alias or a local model directory."""
        served = self.registry.get(name)
        if served is not None:
            return served.source if served.kind == "base" else None
        if self.upstream is not None and name in self.upstream.bases:
            return self.upstream.bases[name]
        if name in assets.known_aliases() or _local_model(name):
            return name
        return None


def create_app(state: ServerState) -> FastAPI:
    """The FastAPI app; its lifespan starts the job runner and stops it and the engines."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state.supervisor.start()
        try:
            yield
        finally:
            state.supervisor.stop()
            await state.close()

    app = FastAPI(title="lmtune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.lmtune = state
    errors.install(app)
    app.add_middleware(limits.BodyLimit)

    @app.middleware("http")
    async def authenticate_and_count(request: Request, call_next):
        path = request.url.path
        if state.api_key and path.startswith("/v1"):
            header = request.headers.get("authorization", "")
            given = header[7:].strip() if header.lower().startswith("bearer ") else ""
            if not given:
                return errors.error_response(401, "You didn't provide an API key. Send it as "
                                             "'Authorization: Bearer <key>' (the key given to lmtune serve "
                                             "--api-key).", None, "missing_api_key")
            if not hmac.compare_digest(given.encode(), state.api_key.encode()):
                return errors.error_response(401, "Incorrect API key provided.", None, "invalid_api_key")
        response = await call_next(request)
        route = request.scope.get("route")
        state.metrics.http.labels(request.method, getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    @app.get("/health")
    async def health():
        return await _health(state)

    @app.get("/metrics")
    def metrics():
        return Response(state.metrics.render(state.registry.engines()), media_type=state.metrics.content_type)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": await _models(state)}

    @app.get("/v1/models/{name:path}")
    async def retrieve_model(name: str):
        return await _models(state, name)

    app.include_router(inference.router)
    app.include_router(files.router)
    app.include_router(fine_tuning.router)
    return app


async def _models(state: ServerState, name: str | None = None):
    """The served models' objects (from the upstream, if it serves them), or the one named ``name``."""
    if state.upstream is not None:
        return await (state.upstream.models() if name is None else state.upstream.model(name))
    return [_model_object(s) for s in state.registry.all()] if name is None else _model_object(state.served(name))


async def _health(state: ServerState):
    """The server's status; with an upstream, a 503 while it does not answer its own ``/health``."""
    engines = state.registry.engines()
    body = {"status": "ok", "models": state.names(),
            "waiting": sum(e.waiting for e in engines), "running": sum(e.active for e in engines),
            "jobs": {s: len(state.store.jobs([s])) for s in ("queued", "running")}}
    if state.upstream is None:
        return body
    ok = await state.upstream.healthy()
    body.update(status="ok" if ok else "unavailable", upstream=state.upstream.label)
    return body if ok else JSONResponse(body, status_code=503)


def _local_model(name: str) -> bool:
    """Whether ``name`` is a model directory on this machine (any name a client sends is safe to ask about)."""
    try:
        return (Path(name).expanduser() / "config.json").is_file()
    except (OSError, RuntimeError, ValueError):  # a name too long for a path, "~nosuchuser/...", a NUL byte
        return False


def _model_object(served: Served) -> dict:
    """OpenAI's model object; a task model adds ``task``: its type, labels, and the input fields it takes."""
    out = {"id": served.name, "object": "model", "created": served.created, "owned_by": "lmtune"}
    if served.task is not None:
        out["task"] = served.task.describe(served.name.removesuffix(SUFFIX))
    return out


def build_state(refs: list[str], state_dir: Path, api_key: str | None = None, max_batch: int = 32,
                max_queue: int = 256, default_max_tokens: int = 256, say=lambda m: None,
                precision: str = "auto", upstream: Upstream | None = None,
                allow_python_graders: bool = False) -> ServerState:
    """Load the models, open the state directory, and serve the models of earlier succeeded jobs.

    With an ``upstream`` nothing is loaded here: ``refs`` are the upstream's to serve, and so would be
    the models jobs train (it serves what it was started with, so they are saved but not served).

    Raises:
        UserError: a model or run that cannot be served.
    """
    metrics = Metrics()
    registry = Registry(max_batch, max_queue, metrics.batch_rows.observe, say, precision)
    try:
        for ref in refs if upstream is None else []:
            registry.add(ref)
        state_dir = Path(state_dir)
        (state_dir / "files").mkdir(parents=True, exist_ok=True)
        store = Store(state_dir / "state.db")
        for job in store.jobs(["succeeded"], newest_first=False) if upstream is None else []:
            try:
                registry.add(str(Path(job["run_dir"])), name=job["fine_tuned_model"])
            except Exception as exc:  # a deleted run or base must not keep the server from starting
                say(f"not serving {job['fine_tuned_model']}: {exc}")
    except BaseException:
        registry.close()
        raise

    def publish(job: dict) -> None:
        if upstream is not None:
            say(f"{job['fine_tuned_model_name']} is trained, in {job['run_dir']}; {upstream.label} serves the runs it "
                "was started with, so restart lmtune serve with that run to serve it")
            return
        registry.add(job["run_dir"], name=job["fine_tuned_model_name"])

    supervisor = Supervisor(store, state_dir, publish, say)
    return ServerState(registry, metrics, store, supervisor, state_dir, api_key, default_max_tokens, upstream,
                       allow_python_graders)
