"""A run's state as other programs see it: ``status.json``, kept by the process that runs the recipe.

``running`` (with the process id, host and start time) is written once the run directory is claimed;
``finished``, ``failed`` (with the error's one line) or ``interrupted`` when the run stops. A run whose
file still says ``running`` but whose process is gone (killed with SIGKILL, the machine rebooted) is
*interrupted*: :func:`read` says so. Runs from before this file existed are judged by what they hold.
``elapsed_s`` adds up the attempts of a resumed run, so the gap between a kill and ``--resume`` is not
counted as the run's time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

from lmtune.run_dir import RunDir

RUNNING, FINISHED, FAILED, INTERRUPTED = "running", "finished", "failed", "interrupted"
STATES = (RUNNING, FINISHED, FAILED, INTERRUPTED)


@contextlib.contextmanager
def kept(run: RunDir, main: bool = True) -> Iterator[None]:
    """Write ``running`` now and the outcome when the block ends (only the main process writes).

    A failure that removed the run directory (nothing was worth keeping) writes nothing.
    """
    if not main:
        yield
        return
    prior = run.read_status() or {}
    start = time.time()
    body = {"state": RUNNING, "pid": os.getpid(), "host": socket.gethostname(),
            "started_at": prior.get("started_at", start), "attempt_started_at": start,
            "elapsed_before_s": float(prior.get("elapsed_s") or 0.0), "attempts": int(prior.get("attempts") or 0) + 1}
    run.write_status(body)
    try:
        yield
    except KeyboardInterrupt:
        _end(run, body, INTERRUPTED, "stopped by Ctrl-C or a signal; --resume continues from the newest checkpoint")
        raise
    except BaseException as exc:
        _end(run, body, FAILED, f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
        raise
    _end(run, body, FINISHED, None)


def _end(run: RunDir, body: dict[str, Any], state: str, error: str | None) -> None:
    if not run.path.is_dir():
        return
    now = time.time()
    run.write_status({**body, "state": state, "ended_at": now, "error": error,
                      "elapsed_s": round(body["elapsed_before_s"] + now - body["attempt_started_at"], 3)})


def read(run: RunDir) -> dict[str, Any]:
    """The run's status with ``state`` as it is now, and ``elapsed_s`` up to now for a running run.

    Without ``status.json``: ``finished`` when the run has a report and results, else ``interrupted``.
    """
    body = run.read_status()
    if body is None or body.get("state") not in STATES:
        done = run.report.is_file() and run.eval.is_file()
        return {"state": FINISHED if done else INTERRUPTED, "started_at": _created(run), "elapsed_s": None}
    if body["state"] == RUNNING:
        if not _alive(body):
            return {**body, "state": INTERRUPTED, "error": "the process running it is gone (killed, or the machine "
                    "restarted); --resume continues from the newest checkpoint", "elapsed_s": None}
        return {**body, "elapsed_s": round(float(body.get("elapsed_before_s") or 0.0) + time.time()
                                           - float(body.get("attempt_started_at") or time.time()), 3)}
    return body


def _alive(body: dict[str, Any]) -> bool:
    """Whether the process that wrote ``running`` still exists (another host's process is taken as alive)."""
    if body.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(body.get("pid")), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


def _created(run: RunDir) -> float | None:
    try:
        return run.manifest.stat().st_mtime
    except OSError:
        return None
