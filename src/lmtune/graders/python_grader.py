"""OpenAI's ``python`` grader: ``grade(sample, item) -> float`` from the recipe (``source:``) or a file
(``file:``), run in a subprocess with a time limit per sample.

A batch runs in one process (:mod:`lmtune.graders.python_worker`): it starts once per :meth:`grade` call, runs
the source once and grades every sample, so a GRPO step's group costs one start, not one per completion. Each
sample has ``timeout_s`` (OpenAI-like default 10 s), enforced in the worker by a timer; a sample whose grader
raises, returns something other than a number, or runs past its time scores 0 and is counted, and the batch
goes on. If the worker stops answering (code that blocks the timer) it is killed a second past the limit, that
sample counts as a timeout, and a new worker grades the rest.

The subprocess keeps a hang or a crash of the grader from stopping the run; it is not a sandbox: the code runs
with the user's own rights, as the recipe's author wrote it.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lmtune.graders.base import Grader, GradeResult, check_batch, sample_of

WORKER = Path(__file__).with_name("python_worker.py")
#: Seconds past a sample's limit before a worker that does not answer is killed.
GRACE_S = 1.0
#: Seconds the worker may take to start and run the source (its imports) before grading begins.
STARTUP_S = 30.0


class PythonGrader(Grader):
    """A python grader; ``source`` is the code, ``filename`` where tracebacks say it is."""

    def __init__(self, name: str, source: str, filename: str, timeout_s: float = 10.0):
        super().__init__(name)
        self.source, self.filename, self.limit = source, filename, timeout_s

    def grade(self, samples: list[str], items: list[dict[str, Any]]) -> GradeResult:
        check_batch(samples, items)
        result = GradeResult([0.0] * len(samples))
        cases = [[sample_of(text), item] for text, item in zip(samples, items)]
        start = 0
        while start < len(cases):
            start = self._run(cases, start, result)
        return result

    def _run(self, cases: list, start: int, result: GradeResult) -> int:
        """Grade ``cases[start:]`` in one worker; returns where the next worker starts (``len(cases)``: done)."""
        directory = str(Path(self.filename).parent) if self.filename != "<source>" else ""
        job = {"source": self.source, "filename": self.filename, "path": directory, "limit": self.limit,
               "cases": cases[start:]}
        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen([sys.executable, "-P", "-u", str(WORKER)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
            try:
                return self._follow(proc, json.dumps(job).encode(), start, len(cases), result, stderr)
            finally:
                _kill(proc)

    def _follow(self, proc, job: bytes, start: int, n: int, result: GradeResult, stderr) -> int:
        """Send the job, then read one line per sample into ``result``; returns where a next worker starts."""
        try:
            proc.stdin.write(job)
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the worker died at once; its stdout's end says so below
        with _Lines(proc.stdout) as lines:
            return self._read(lines, proc, start, n, result, stderr)

    def _read(self, lines: _Lines, proc, start: int, n: int, result: GradeResult, stderr) -> int:
        failed = self._started(lines, proc, stderr)
        if failed is not None:  # the source itself failed: no sample can be graded
            for i in range(start, n):
                result.note(failed[0], i, failed[1])
            return n
        for i in range(start, n):
            line = lines.next(self.limit + GRACE_S)
            if line is None:
                if lines.ended:  # the worker exited in this sample (os._exit, a crash): that sample failed
                    result.note("errors", i, f"the grader's process exited ({_tail(proc, stderr)})")
                else:
                    result.note("timeouts", i, f"took longer than {self.limit:g} s")
                return i + 1
            if "score" in line:
                result.scores[i] = line["score"]
            elif "timeout" in line:
                result.note("timeouts", i, f"took longer than {self.limit:g} s")
            else:
                result.note("errors", i, line["error"])
        return n

    def _started(self, lines: _Lines, proc, stderr) -> tuple[str, str] | None:
        """None once the worker has run the source; else (the count, why) every sample fails with."""
        startup = max(STARTUP_S, self.limit)
        first = lines.next(startup)
        if first is not None and "fatal" not in first:
            return None
        if first is not None:
            return "errors", f"the grader's source failed: {first['fatal']}"
        if lines.ended:
            return "errors", f"the grader's process exited ({_tail(proc, stderr)})"
        return "timeouts", f"the grader's source did not finish running in {startup:g} s"


class _Lines:
    """JSON lines from a pipe, each waited for at most a given time."""

    def __init__(self, pipe):
        self.pipe, self.buffer, self.ended = pipe, b"", False
        self.selector = selectors.DefaultSelector()
        self.selector.register(pipe, selectors.EVENT_READ)

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc) -> None:
        self.selector.close()

    def next(self, timeout: float) -> dict | None:
        """The next line's object; None when none came within ``timeout`` s or the pipe ended (``ended``)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if self.ended or left <= 0 or not self.selector.select(left):
                return None
            chunk = os.read(self.pipe.fileno(), 65536)
            self.ended = not chunk
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


def _kill(proc: subprocess.Popen) -> None:
    """End the worker and anything it started (its own process group)."""
    try:  # the whole group, even after the worker exited: a grader may have started processes of its own
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    proc.stdout.close()


def _tail(proc: subprocess.Popen, stderr) -> str:
    """How the worker ended, with the last line it wrote to stderr."""
    code = proc.wait()
    stderr.seek(0)
    last = [line for line in stderr.read().decode(errors="replace").splitlines() if line.strip()][-1:]
    return f"exit code {code}" + (f": {last[0][:200]}" if last else "")


def read_source(config) -> tuple[str, str]:
    """``(code, filename)`` of a python grader: its ``source``, or its ``file`` read now (so that editing the file
    during a run does not change the grader).

    Raises:
        ValueError: the file is missing, unreadable, or does not define ``grade``.
    """
    from lmtune.recipe_graders import check_python_source

    if config.source is not None:
        return config.source, "<source>"
    path = Path(config.file).expanduser()
    try:
        code = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path} ({getattr(exc, 'strerror', None) or exc}); give the path of a .py "
                         "file defining grade(sample, item)") from None
    check_python_source(code, str(path))
    return code, str(path.resolve())
