"""At most one worker per job: an exclusive ``flock`` on ``jobs/<id>/worker.lock`` held for the worker's life.

A job's own directory, :func:`job_dir`, holds its lock, its exit record and the worker's output
(``worker.log``); the job's run directory may be elsewhere (a studio run lives in its runs folder).

The kernel releases a ``flock`` when the last descriptor of its holder closes, so also when the
holder is killed with SIGKILL: "the lock is held" means exactly "a live process is working on
this job", with no stale lock to clean up after a crash. The holder writes its pid in the file
(for messages only). ``worker.exit`` records how the last worker ended; code 0 means the job's
model is trained, so no later worker trains it again.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

LOCK = "worker.lock"
EXIT = "worker.exit"
LOG = "worker.log"


def job_dir(state_dir: Path, job_id: str) -> Path:
    """``<state_dir>/jobs/<id>``: the job's lock, exit record and ``worker.log``, wherever its run directory is."""
    return Path(state_dir) / "jobs" / job_id


def acquire(job_dir: Path) -> int | None:
    """Take the job's lock for this process: a descriptor to keep open while working, or None if it is held."""
    job_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(job_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def holder(job_dir: Path) -> int | None:
    """The pid of the live process holding the job's lock (0 if it wrote none yet), or None if no process does."""
    try:
        fd = os.open(job_dir / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a shared probe: never blocks a taker for long
        except OSError:
            text = os.pread(fd, 32, 0).split()
            return int(text[0]) if text and text[0].isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def record_exit(job_dir: Path, code: int) -> None:
    """Write how this worker ended (while it still holds the lock, so the next one reads it)."""
    tmp = job_dir / f".{EXIT}.tmp"
    tmp.write_text(json.dumps({"code": code, "pid": os.getpid()}))
    os.replace(tmp, job_dir / EXIT)


def last_exit(job_dir: Path) -> int | None:
    """The exit code the job's last worker recorded; None if none did (e.g. it was killed)."""
    try:
        return int(json.loads((job_dir / EXIT).read_text())["code"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
