"""The studio's run queue: runs started, cancelled and resumed from the browser, through ``lmtune serve``'s job worker.

A run queued here is a job in the same SQLite store (``<state_dir>/state.db``), run by the same
:class:`~lmtune.serve.jobs.supervisor.Supervisor` in the same worker process as a fine-tuning job of the
API: one run at a time, the others queued in order; a stopped studio interrupts its run at a checkpoint and
the next start resumes it, then runs what was queued. A studio job's run directory is ``<runs>/<name>``; its
own directory (lock, ``worker.log``, the run's console) is ``<state_dir>/jobs/<id>``. The job row's columns
meant for the API are filled from the recipe: ``model`` and ``training_file`` from it, ``method``
``{"type": "recipe"}`` (what marks a studio job), ``fine_tuned_model_name`` the run's name. A run's status is
its ``status.json``; the queue only adds what the job knows and the run cannot say (:meth:`RunQueue.status_of`):
queued, and cancelled.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmtune import run_status
from lmtune.errors import UserError
from lmtune.recipe import RUN_NAME, recipe_from_dict
from lmtune.recipe_model import model_name
from lmtune.run_dir import RunDir
from lmtune.serve.jobs import joblock
from lmtune.serve.jobs.store import Store, new_id
from lmtune.serve.jobs.supervisor import Supervisor
from lmtune.studio import recipes
from lmtune.studio.index import RunNotFound, run_dir

ACTIVE = ("queued", "running")
METHOD = {"type": "recipe"}
CONSOLE_CHUNK = 64 * 1024
MAX_NAME = 100  # lmtune.recipe.RUN_NAME's longest name
LISTED = 200  # the newest jobs GET /api/queue lists
SNAPSHOT_S = 1.0  # how long the runs page's per-row lookups reuse one read of the store


class Conflict(Exception):
    """The run is not in a state that allows what was asked (HTTP 409)."""


class RunQueue:
    """The studio's runs as jobs of a :class:`Supervisor`.

    Args:
        state_dir: the studio's own files: ``state.db`` and ``jobs/<id>/``.
        runs: the runs folder; a queued run's directory is ``<runs>/<name>``.
        say: prints a progress line (the supervisor's start and end of each job).
    """

    def __init__(self, state_dir: Path, runs: Path, say: Callable[[str], None] = lambda m: None):
        self.state_dir = Path(state_dir)
        self.runs = Path(runs).resolve()
        self.store = Store(self.state_dir / "state.db")
        self.supervisor = Supervisor(self.store, self.state_dir, publish=_nothing_to_serve, say=say)
        self._lock = threading.Lock()  # a name is chosen and its job added as one step
        self._snapshot: tuple[float, dict[str, dict[str, Any]]] | None = None
        self._started = False

    def start(self) -> RunQueue:
        """Start the supervisor thread: a run left running by the last stop resumes first, then the queued ones."""
        if not self._started:
            self._started = True
            self.supervisor.start()
        return self

    def stop(self) -> None:
        """Interrupt the running worker (it writes a checkpoint); its job stays running for the next start."""
        if self._started:
            self.supervisor.stop()

    # ------------------------------------------------------------------ changes

    def submit(self, text: str, source: str | None = None) -> str:
        """Validate recipe text (see :func:`recipes.check`), queue it as a new run; return the run's name.

        The name is the recipe's, or ``<name>-2``, ``-3``... when a directory or a queued run has it.

        Raises:
            UserError: every problem of the recipe, each with its key path (``problems``).
        """
        recipe = recipes.check(text)
        with self._lock:
            name = self.free_name(recipe["name"])
            recipe["name"] = name
            self._add(recipe, name, source)
        self.supervisor.notify()
        return name

    def cancel(self, name: str) -> bool:
        """Cancel the studio's queued or running job of run ``name``; False if it is neither.

        Raises:
            RunNotFound: no run and no studio job of that name.
            Conflict: the run was started outside the studio (it is stopped where it runs).
        """
        job = self._latest(fresh=True).get(name)
        if job is None:
            run_dir(self.runs, name)
            raise Conflict(f"{name} was not started from the studio; stop it where it runs (Ctrl-C in its terminal)")
        cancelled = job["status"] in ACTIVE and self.supervisor.cancel(job["id"])
        self._snapshot = None
        return cancelled

    def resume(self, name: str) -> str:
        """Queue run ``name`` again (interrupted, failed or cancelled); its worker resumes from its newest checkpoint.

        A run started outside the studio (``lmtune train``) resumes from the ``recipe.yaml`` it saved.

        Raises:
            RunNotFound: no run and no studio job of that name.
            Conflict: the run is queued, running or finished.
            UserError: its saved recipe is no longer valid, or a data file it names is gone.
        """
        with self._lock:
            job = self._latest(fresh=True).get(name)
            if job is not None and job["status"] in ACTIVE:
                raise Conflict(f"{name} is already {job['status']}")
            recipe = self._recipe_to_resume(name, job)
            problems = recipes.data_problems(recipe)
            if problems:
                raise UserError(problems[0][1], source=problems[0][0], problems=problems)
            recipe_from_dict(recipe, source=name)
            self._add(recipe, name, ((job or {}).get("metadata") or {}).get("source"), resumed=job is not None)
        self.supervisor.notify()
        return "queued"

    def _recipe_to_resume(self, name: str, job: dict[str, Any] | None) -> dict[str, Any]:
        try:
            run = run_dir(self.runs, name)
        except RunNotFound:
            if job is None:
                raise
            run = None
        if run is None:  # queued, then cancelled or failed before its directory was made: start it afresh
            if job["status"] == "succeeded":
                raise Conflict(f"{name} finished, and its run directory is gone")
            return job["recipe"]
        state = run_status.read(run)["state"]
        if state in (run_status.RUNNING, run_status.FINISHED):
            raise Conflict(f"{name} is {state}; only an interrupted, failed or cancelled run can be resumed")
        try:
            recipe = run.read_recipe()
        except (OSError, ValueError) as exc:
            raise Conflict(f"{name}'s recipe.yaml cannot be read ({exc}); start it again from New run") from None
        if not isinstance(recipe, dict):
            raise Conflict(f"{name}'s recipe.yaml is not a recipe; start it again from New run")
        return recipe

    def _add(self, recipe: dict[str, Any], name: str, source: str | None, resumed: bool = False) -> None:
        """Queue a job of run ``name``; ``resumed``: it goes on from the run's earlier job (one console)."""
        data = recipe.get("data") or {}
        model = model_name(recipe.get("model")) or "?"
        self.store.add_job({
            "id": new_id("studio"), "created_at": int(time.time()), "model": model, "base_ref": model,
            "training_file": str(data.get("train")), "validation_file": data.get("validation"),
            "hyperparameters": {}, "method": METHOD, "suffix": None, "seed": int(recipe.get("seed") or 0),
            "metadata": {"source": source, "resumed": resumed}, "recipe": recipe, "run_dir": str(self.runs / name),
            "fine_tuned_model_name": name, "status": "queued"})
        self._snapshot = None

    # ------------------------------------------------------------------ reads

    def free_name(self, name: str) -> str:
        """``name``, or the first ``name-2``, ``name-3``... that no directory in the runs folder or queued run has."""
        taken = {job["fine_tuned_model_name"] for job in self._jobs() if job["status"] in ACTIVE}
        return free_name(self.runs, name, taken)

    def pending(self) -> list[dict[str, Any]]:
        """Queued runs that have no run directory yet, newest first, as rows like :meth:`Index.row`."""
        return [_pending_row(job) for job in self._latest(fresh=True).values()
                if job["status"] in ACTIVE and not RunDir(job["run_dir"]).is_run]

    def status_of(self, name: str, state: str | None = None) -> str | None:
        """What the studio's own job says of run ``name`` when its ``status.json`` cannot say it, else None.

        ``queued`` (waiting, or its worker is starting) and ``cancelled``; None for a run with no studio job,
        and whenever the run itself says running or finished (it was run again from a terminal since).

        Args:
            name: the run.
            state: the run's own state when the caller read it already (``run_status.read``).
        """
        job = self._latest().get(name)
        if job is None or job["status"] not in (*ACTIVE, "cancelled"):
            return None
        if state is None:
            try:
                state = run_status.read(run_dir(self.runs, name))["state"]
            except RunNotFound:
                state = None
        if state in (run_status.RUNNING, run_status.FINISHED):
            return None
        return "cancelled" if job["status"] == "cancelled" else "queued"

    def jobs(self) -> list[dict[str, Any]]:
        """The studio's newest jobs, newest first: name, status (``finished`` once trained), times, error, source."""
        return [{"name": job["fine_tuned_model_name"], "status": _shown(job["status"]), "created_at": job["created_at"],
                 "finished_at": job["finished_at"], "error": (job["error"] or {}).get("message"),
                 "source": (job["metadata"] or {}).get("source")} for job in self._jobs()[:LISTED]]

    def console(self, name: str, offset: int = 0) -> dict[str, Any]:
        """The run's console (its workers' output) from byte ``offset``: ``{"text", "offset", "done", "status"}``.

        At most 64 KiB a call; ``offset`` is where the next call goes on. The console of a resumed run goes
        on after its earlier attempts' (each resume is a job of its own, with its own ``worker.log``: their
        logs are read as one). ``done``: the run's job has ended and everything was read. An offset past
        the end (the name now belongs to a run started anew) starts over at 0.

        Raises:
            RunNotFound: the run has no studio job.
        """
        chain = self._console_jobs(name)
        if not chain:
            raise RunNotFound(name)
        job = chain[-1]
        active = job["status"] in ACTIVE
        logs = [joblock.job_dir(self.state_dir, j["id"]) / joblock.LOG for j in chain]
        data, offset, total = _read_logs(logs, offset)
        if active:  # a character being written now is sent whole with the next call
            data = _whole_characters(data)
        end = offset + len(data)
        return {"text": data.decode("utf-8", errors="replace"), "offset": end, "done": not active and end >= total,
                "status": _shown(job["status"])}

    def _console_jobs(self, name: str) -> list[dict[str, Any]]:
        """The jobs of run ``name``'s console, oldest first: its newest start and the resumes after it."""
        chain = []
        for job in self._jobs():  # newest first
            if job["fine_tuned_model_name"] == name:
                chain.append(job)
                if not (job["metadata"] or {}).get("resumed"):
                    break
        return chain[::-1]

    def _jobs(self) -> list[dict[str, Any]]:
        return [job for job in self.store.jobs() if (job["method"] or {}).get("type") == METHOD["type"]]

    def _latest(self, fresh: bool = False) -> dict[str, dict[str, Any]]:
        """Each run's newest studio job, newest first (re-read at most every ``SNAPSHOT_S`` unless ``fresh``)."""
        snapshot = self._snapshot
        if fresh or snapshot is None or time.monotonic() - snapshot[0] > SNAPSHOT_S:
            latest: dict[str, dict[str, Any]] = {}
            for job in self._jobs():
                latest.setdefault(job["fine_tuned_model_name"], job)
            snapshot = self._snapshot = (time.monotonic(), latest)
        return snapshot[1]


def free_name(runs: Path, name: str, taken: set[str]) -> str:
    """``name``, or the first ``name-N`` (N = 2, 3, ...) not in ``taken`` and not a path in ``runs``."""
    candidate, n = name, 1
    while candidate in taken or os.path.lexists(Path(runs) / candidate) or not RUN_NAME.fullmatch(candidate):
        n += 1
        suffix = f"-{n}"
        candidate = name[:MAX_NAME - len(suffix)] + suffix
    return candidate


def _nothing_to_serve(job: dict[str, Any]) -> None:
    """The supervisor's ``publish``: a studio run's model is not served (``lmtune serve RUN`` does that)."""


def _shown(status: str) -> str:
    return "finished" if status == "succeeded" else status


def _pending_row(job: dict[str, Any]) -> dict[str, Any]:
    recipe = job["recipe"] or {}
    task, method = recipe.get("task"), recipe.get("method")
    return {"name": job["fine_tuned_model_name"], "title": str(recipe.get("name") or job["fine_tuned_model_name"]),
            "task": task.get("type") if isinstance(task, dict) else None, "model": model_name(recipe.get("model")),
            "method": method.get("name") if isinstance(method, dict) else None, "report": False,
            "metric": None, "system": None, "value": None, "ci_low": None, "ci_high": None, "winner": None,
            "status": "queued", "error": None, "started_at": job["created_at"], "duration_s": None}


def _read_logs(paths: list[Path], offset: int) -> tuple[bytes, int, int]:
    """Up to ``CONSOLE_CHUNK`` bytes from ``offset`` of the files ``paths`` read as one (a missing one is empty).

    Returns:
        (bytes, the offset they start at: 0 when ``offset`` was past the end, the total size).
    """
    sizes = [path.stat().st_size if path.is_file() else 0 for path in paths]
    total = sum(sizes)
    offset = max(0, int(offset))
    offset = 0 if offset > total else offset
    start = 0
    for i, (path, size) in enumerate(zip(paths, sizes)):
        last = i == len(paths) - 1  # the last log may have grown since its size was taken: read on
        if offset < start + size or last:
            try:
                with open(path, "rb") as log:
                    log.seek(offset - start)
                    return log.read(CONSOLE_CHUNK if last else min(CONSOLE_CHUNK, start + size - offset)), offset, total
            except FileNotFoundError:  # queued: no worker has written yet
                return b"", offset, total
        start += size
    return b"", offset, total


def _whole_characters(data: bytes) -> bytes:
    """``data`` without a UTF-8 character cut off at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for the character's first byte
        length = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
        return data if length <= back else data[:-back]
    return data
