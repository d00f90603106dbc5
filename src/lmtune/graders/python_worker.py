"""The process a python grader's code runs in (started by :mod:`lmtune.graders.python_grader`, by path).

It reads one job from stdin, ``{"source", "filename", "path", "limit", "cases": [[sample, item], ...]}``, runs
the source once, then calls ``grade(sample, item)`` on each case in order, each under a SIGALRM timer of
``limit`` seconds, and writes one JSON line per case to its stdout as soon as the case ends: ``{"score"}``,
``{"error"}`` or ``{"timeout"}``. Before the cases it writes ``{"ready"}`` (the source ran) or ``{"fatal"}``.
The grader's own prints go to stderr, so they cannot be mistaken for results. It imports nothing of lmtune:
the process starts in the time Python takes, not the time torch takes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys


class _TimeUp(BaseException):
    """Raised in the grader's code when its time is up; a BaseException, so ``except Exception`` lets it by."""


def _alarm(signum, frame):
    raise _TimeUp()


def _result(grade, sample, item, limit: float) -> dict:
    try:
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            value = grade(sample, item)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _TimeUp:
        return {"timeout": True}
    except BaseException as exc:  # SystemExit and KeyboardInterrupt in the grader are its failures too
        return {"error": f"{type(exc).__name__}: {exc}"}
    if isinstance(value, (int, float)) and math.isfinite(value):
        return {"score": float(value)}
    return {"error": f"grade returned {value!r}, not a finite number"}


def main() -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # prints of the grader, from Python or C, land on stderr
    sys.stdout = sys.stderr
    job = json.loads(sys.stdin.read())
    if job.get("path"):
        sys.path.insert(0, job["path"])  # a file's grader may import the modules beside it
    namespace = {"__name__": "__grader__"}
    try:
        exec(compile(job["source"], job["filename"], "exec"), namespace)  # noqa: S102 (the user's own grader)
        grade = namespace["grade"]
    except BaseException as exc:
        out.write(json.dumps({"fatal": f"{type(exc).__name__}: {exc}"}) + "\n")
        return
    out.write(json.dumps({"ready": True}) + "\n")
    signal.signal(signal.SIGALRM, _alarm)
    for sample, item in job["cases"]:
        out.write(json.dumps(_result(grade, sample, item, job["limit"])) + "\n")


if __name__ == "__main__":
    main()
