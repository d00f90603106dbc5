"""``/v1/fine_tuning/jobs``: create, list, retrieve and cancel jobs; their events and checkpoints.

Jobs are rows in the state database and run one at a time in a worker process (see
:mod:`lmtune.serve.jobs.supervisor`); a succeeded job's model is served as ``ft:<base>:<suffix>:<job id>``.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lmtune.recipe import TrainingConfig
from lmtune.run_dir import RunDir, checkpoint_dirs, checkpoint_step
from lmtune.serve.errors import APIError, model_not_found
from lmtune.serve.jobs import reinforcement, shapes
from lmtune.serve.jobs.recipe import (
    BASE_LEARNING_RATE,
    COMMON,
    HYPERPARAMETERS,
    build_recipe,
    format_task,
    resolve_hyperparameters,
)
from lmtune.serve.jobs.store import new_id
from lmtune.serve.jobs.worker import openai_metrics

router = APIRouter()
SUFFIX = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
MAX_SEED = 2**32 - 1  # a recipe's seed seeds numpy too, whose seeds are unsigned 32-bit integers
METHODS = tuple(HYPERPARAMETERS)


class JobRequest(BaseModel):
    """``POST /v1/fine_tuning/jobs`` as OpenAI defines it."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    hyperparameters: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    suffix: str | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None

    @model_validator(mode="after")
    def _checks(self):
        extra = sorted(self.model_extra or {})
        if extra:
            raise APIError(400, f"Unrecognized request argument supplied: {extra[0]}", extra[0], "unknown_parameter")
        if self.integrations:
            raise APIError(400, "integrations (Weights & Biases) are not supported by lmtune serve.", "integrations",
                           "unsupported_parameter")
        if self.suffix is not None and not SUFFIX.fullmatch(self.suffix):
            raise APIError(400, "suffix: 1 to 64 letters, digits, '_', '-' or '.'.", "suffix", "invalid_value")
        self._check_method()
        return self

    def _check_method(self) -> None:
        """``method`` is ``{"type": "supervised"|"dpo"|"reinforcement", <type>: {"hyperparameters": {...}} (and
        reinforcement's ``grader``), "lmtune": {...}}``."""
        kind = (self.method or {}).get("type", "supervised")
        if not isinstance(kind, str) or kind not in METHODS:
            raise APIError(400, f"method.type must be one of {', '.join(METHODS)}.", "method.type", "invalid_value")
        section = (self.method or {}).get(kind)
        if section is not None and not (isinstance(section, dict)
                                        and isinstance(section.get("hyperparameters") or {}, dict)):
            raise APIError(400, f"method.{kind} must be an object like {{\"hyperparameters\": {{\"n_epochs\": 3}}}}.",
                           f"method.{kind}", "invalid_value")

    def hyperparameters_given(self) -> dict[str, Any]:
        """The hyperparameters of the request: top-level ones, overridden by those under ``method.<type>``."""
        method = self.method or {}
        nested = (method.get(method.get("type", "supervised")) or {}).get("hyperparameters") or {}
        return {**(self.hyperparameters or {}), **nested}

    def kind(self) -> str:
        return (self.method or {}).get("type", "supervised")

    def nested_hyperparameters(self) -> set[str]:
        """The names given under ``method.<type>.hyperparameters`` (an error names them there)."""
        return set(((self.method or {}).get(self.kind()) or {}).get("hyperparameters") or {})


@router.post("/v1/fine_tuning/jobs")
def create_job(body: JobRequest, request: Request):
    state = request.app.state.lmtune
    train = _file(state, body.training_file, "training_file")
    validation = _file(state, body.validation_file, "validation_file") if body.validation_file else None
    formats = [f["summary"]["format"] for f in (train, validation or train)]
    if format_task(formats[0]) != format_task(formats[1]):  # a worker would fail on it much later
        raise APIError(400, f"The validation file has {formats[1]} records, which do not suit the training file's "
                       f"{formats[0]} records; give both the same format.", "validation_file", "invalid_file")
    base_ref = state.base_ref(body.model)
    if base_ref is None:
        raise model_not_found(body.model)
    method = dict(body.method or {"type": "supervised"})
    hyper = resolve_hyperparameters(body.hyperparameters_given(), body.kind(), body.nested_hyperparameters())
    job_id = new_id("ftjob")
    seed = body.seed if body.seed is not None else random.randrange(2**31)
    run_dir = state.jobs_dir / job_id / "run"
    try:
        train, validation, notes = _job_data(state.jobs_dir / job_id, train, validation, hyper, method,
                                             state.allow_python_graders)
        recipe = build_recipe(job_id, base_ref, train, validation, hyper, method, seed)
    except APIError:
        shutil.rmtree(state.jobs_dir / job_id, ignore_errors=True)  # the converted data of a job never created
        raise
    row = {"id": job_id, "created_at": int(time.time()), "model": body.model, "base_ref": base_ref,
           "training_file": body.training_file, "validation_file": body.validation_file,
           "hyperparameters": _running(body.kind(), hyper, recipe["training"]), "method": method, "suffix": body.suffix,
           "seed": seed, "metadata": body.metadata, "recipe": recipe, "run_dir": str(run_dir),
           "fine_tuned_model_name": f"ft:{body.model}:{body.suffix or ''}:{job_id}", "status": "queued"}
    state.store.add_job(row)
    state.store.add_event(job_id, f"Created fine-tuning job: {job_id}")
    state.store.add_event(job_id, f"Training file {body.training_file}: {train['summary']['records']} "
                          f"{train['summary']['format']} records; recipe: {json.dumps(recipe['method'])}, "
                          f"{json.dumps(recipe['training'])}")
    for note in notes:
        state.store.add_event(job_id, note)
    state.supervisor.notify()
    return job_object(state.store.job(job_id))


def _running(kind: str, hyper: dict[str, Any], training: dict[str, Any]) -> dict[str, Any]:
    """The job's hyperparameters as they run (``method.lmtune`` may have changed them), in OpenAI's names."""
    out = {**hyper, "n_epochs": training["epochs"], "batch_size": training["batch_size"],
           "learning_rate_multiplier": training["learning_rate"] / BASE_LEARNING_RATE}
    if kind == "dpo":
        out["beta"] = training.get("dpo_beta", TrainingConfig.model_fields["dpo_beta"].default)
    if "grpo" in training:
        out["compute_multiplier"] = training["grpo"]["num_generations"] / reinforcement.GENERATIONS
        out["eval_interval"] = training.get("eval_every", TrainingConfig.model_fields["eval_every"].default)
    return out


def _job_data(job_dir: Path, train: dict, validation: dict | None, hyper: dict, method: dict,
              allow_python: bool = False):
    """The files in OpenAI's record shapes written in lmtune's formats, and a reinforcement job's grader checked.

    Returns:
        ``(train, validation, notes)``: the file rows the recipe reads, and the job events that say what was
        accepted but has no counterpart, or left out.
    """
    train, validation, converted = shapes.convert_rows(job_dir, train, validation)
    if method.get("type") == "reinforcement":
        grader = reinforcement.grader_of(method, allow_python)
        reinforcement.check_grader(grader, Path(train["path"]), train["filename"])
    return train, validation, reinforcement.notes(hyper, converted)


@router.get("/v1/fine_tuning/jobs")
def list_jobs(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100)):
    jobs = [job_object(j) for j in request.app.state.lmtune.store.jobs()]
    return _page(jobs, after, limit)


@router.get("/v1/fine_tuning/jobs/{job_id}")
def retrieve_job(job_id: str, request: Request):
    return job_object(_job(request.app.state.lmtune, job_id))


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request):
    state = request.app.state.lmtune
    job = _job(state, job_id)
    if not state.supervisor.cancel(job_id):
        raise APIError(400, f"Job {job_id} has already {state.store.job(job_id)['status']}; only queued or running "
                       "jobs can be cancelled.", "job_id", "job_not_cancellable")
    return job_object(state.store.job(job["id"]))


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
def job_events(job_id: str, request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=1000)):
    state = request.app.state.lmtune
    _job(state, job_id)
    events = [{"id": f"ftevent-{e['id']}", "object": "fine_tuning.job.event", "created_at": e["created_at"],
               "level": e["level"], "message": e["message"], "type": e["type"], "data": e["data"] or {}}
              for e in state.store.events(job_id)]
    return _page(events, after, limit)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
def job_checkpoints(job_id: str, request: Request, after: str | None = None, limit: int = Query(10, ge=1, le=100)):
    job = _job(request.app.state.lmtune, job_id)
    return _page(checkpoints(job), after, limit)


def job_object(job: dict) -> dict:
    """A job row in OpenAI's ``fine_tuning.job`` shape."""
    hyper = {k: job["hyperparameters"][k] for k in COMMON}
    kind = job["method"].get("type", "supervised")
    names = HYPERPARAMETERS.get(kind, COMMON)
    method = {"type": kind, kind: {"hyperparameters": {k: v for k, v in job["hyperparameters"].items() if k in names}}}
    if kind == "reinforcement":
        method[kind]["grader"] = job["method"][kind]["grader"]
    return {"id": job["id"], "object": "fine_tuning.job", "created_at": job["created_at"], "model": job["model"],
            "fine_tuned_model": job["fine_tuned_model"], "finished_at": job["finished_at"], "error": job["error"],
            "hyperparameters": hyper, "organization_id": "lmtune", "result_files": [], "seed": job["seed"],
            "status": job["status"], "trained_tokens": job["trained_tokens"], "training_file": job["training_file"],
            "validation_file": job["validation_file"], "estimated_finish": None, "integrations": [],
            "metadata": job["metadata"], "method": method}


def checkpoints(job: dict) -> list[dict]:
    """The run's saved checkpoints, newest first, with the losses (and a GRPO job's rewards) logged at their step."""
    run_dir = RunDir(job["run_dir"])
    found = reversed(checkpoint_dirs(run_dir.checkpoints, complete=True))
    logged: dict[int, dict[str, float]] = {}
    metrics = run_dir.metrics
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "loss" in record:
            logged.setdefault(record.get("step"), {}).update(openai_metrics(record))
    out = []
    for path in found:
        step = checkpoint_step(path)
        out.append({"id": f"ftckpt-{job['id'].removeprefix('ftjob-')}-{step}", "object": "fine_tuning.job.checkpoint",
                    "created_at": int(path.stat().st_mtime), "fine_tuning_job_id": job["id"], "step_number": step,
                    "fine_tuned_model_checkpoint": f"{job['fine_tuned_model_name']}:ckpt-step-{step}",
                    "metrics": {"step": float(step), "train_loss": None, "valid_loss": None,
                                **logged.get(step, {})}})
    return out


def _page(items: list[dict], after: str | None, limit: int) -> dict:
    """A cursor page, as the client's auto-pagination follows it (``after`` = the last id seen)."""
    start = 0
    if after is not None:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    page = items[start:start + limit]
    return {"object": "list", "data": page, "has_more": start + limit < len(items)}


def _job(state, job_id: str) -> dict:
    job = state.store.job(job_id)
    if job is None:
        raise APIError(404, f"No fine-tuning job {job_id}; GET /v1/fine_tuning/jobs lists them.", "job_id",
                       "job_not_found")
    return job


def _file(state, file_id: str, param: str) -> dict:
    row = state.store.file(file_id)
    if row is None:
        raise APIError(400, f"Invalid file '{file_id}': no such uploaded file (upload it with POST /v1/files).",
                       param, "invalid_file")
    return row
