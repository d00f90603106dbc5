"""Runs fine-tuning jobs one at a time, each in its own worker process, and survives restarts.

On start-up, a job the previous server left ``running`` runs first and resumes from its newest
checkpoint (after ``MAX_ATTEMPTS`` interrupted attempts it is failed with that reason); ``queued``
jobs follow in creation order. Cancelling a running job terminates its process. Stopping the
server interrupts the worker with SIGINT, so the training loop writes a checkpoint before it
exits, and leaves the job ``running`` for the next start. A job whose worker trained successfully
is marked ``succeeded`` only after its model has been registered with the server.

A job never has two workers, whatever crashes. Workers run in a session of their own (a Ctrl-C
meant for the server must not reach them unannounced), so a server killed outright leaves its
worker alive. Three things together keep that worker alone on its job:

* the worker holds the job's lock (``joblock``: a ``flock`` that dies with its holder) for its
  whole life, and exits at once with ``EXIT_BUSY`` when another live process holds it;
* the worker watches the server that started it and, once it is gone, interrupts itself: it
  writes a checkpoint and exits, releasing the lock;
* before starting a worker, this supervisor looks at the lock: while a live process (an orphan of
  the previous server) holds it, the job is adopted: the supervisor waits for that worker to let
  go, then settles the job from the store and the exit code the worker recorded (0: publish the
  trained model; anything else: start a worker, which resumes from the newest checkpoint).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from lmtune.serve.jobs import joblock
from lmtune.serve.jobs.store import Store
from lmtune.serve.jobs.worker import EXIT_BUSY

MAX_ATTEMPTS = 3
STOP_GRACE_S = 60  # a worker writing its interrupt checkpoint gets this long before it is killed


class Supervisor:
    """The job runner thread of one server.

    Args:
        store: the state database.
        state_dir: holds each job's own directory, ``jobs/<id>`` (its lock and ``worker.log``, see
            :func:`joblock.job_dir`); a job's run directory is its ``run_dir``, wherever that is.
        publish: called with a job whose training succeeded; registers its model (may raise).
        say: prints a progress line.
    """

    def __init__(self, store: Store, state_dir: Path, publish: Callable[[dict], None],
                 say: Callable[[str], None] = lambda m: None):
        self.store, self.state_dir, self.publish, self.say = store, Path(state_dir), publish, say
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._current: tuple[str, subprocess.Popen] | None = None
        self._thread = threading.Thread(target=self._loop, name="lmtune-jobs", daemon=True)

    def start(self) -> Supervisor:
        self._recover()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=STOP_GRACE_S + 10)

    def notify(self) -> None:
        """A job was queued."""
        self._wake.set()

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False if it had already finished."""
        with self._lock:
            if not self.store.finish_job(job_id, "cancelled", expect=("queued", "running")):
                return False
            self.store.add_event(job_id, "Fine-tuning job cancelled")
            if self._current and self._current[0] == job_id:
                _terminate(self._current[1], signal.SIGTERM, 10)
            return True

    def _recover(self) -> None:
        for job in self.store.jobs(["running"], newest_first=False):
            attempts = job["attempts"] + 1
            if attempts >= MAX_ATTEMPTS:
                reason = f"interrupted {attempts} times (server stopped or worker killed); giving up"
                self.store.finish_job(job["id"], "failed", error={"code": "interrupted", "message": reason,
                                                                  "param": None})
                self.store.add_event(job["id"], f"Fine-tuning job failed: {reason}", level="error")
                continue
            self.store.update_job(job["id"], ["running"], attempts=attempts)
            self.store.add_event(job["id"], "Server restarted; the job will resume from its newest checkpoint",
                                 level="warn")

    def _loop(self) -> None:
        while not self._stopping.is_set():
            job = self.store.next_job()
            if job is None:
                self._wake.wait(timeout=2.0)
                self._wake.clear()
                continue
            self._run(job)

    def _run(self, job: dict) -> None:
        job_id = job["id"]
        job_dir = joblock.job_dir(self.state_dir, job_id)
        if joblock.holder(job_dir) is not None and not self._adopt(job):
            return  # stopping, or the adopted worker (or a cancel) settled the job
        if joblock.last_exit(job_dir) == 0 and job["status"] == "running":
            self._settle(job, 0, job_dir / joblock.LOG)  # trained by a worker whose server died
            return
        with self._lock:
            if not self.store.update_job(job_id, ["queued", "running"], status="running"):
                return  # cancelled meanwhile
            job_dir.mkdir(parents=True, exist_ok=True)
            log = open(job_dir / joblock.LOG, "a", encoding="utf-8")
            try:
                proc = subprocess.Popen([sys.executable, "-m", "lmtune.serve.jobs.worker", str(self.state_dir), job_id,
                                         str(os.getpid())], stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                log.close()
                reason = f"could not start the worker process: {exc}"
                self.store.finish_job(job_id, "failed", error={"code": "worker_failed", "message": reason,
                                                               "param": None})
                self.store.add_event(job_id, f"Fine-tuning job failed: {reason}", level="error")
                return
            self._current = (job_id, proc)
        self.say(f"job {job_id}: started (worker pid {proc.pid})")
        try:
            while proc.poll() is None:
                if self._stopping.wait(timeout=0.5):
                    _terminate(proc, signal.SIGINT, STOP_GRACE_S)
                    return  # left running: the next server start resumes it
        finally:
            with self._lock:
                self._current = None
            log.close()
        if proc.returncode == EXIT_BUSY:
            return  # a worker of an earlier server took the job meanwhile: the next round adopts it
        self._settle(job, proc.returncode, job_dir / joblock.LOG)

    def _adopt(self, job: dict) -> bool:
        """Wait for the live worker holding ``job`` (left by an earlier server) to exit; whether to go on with the job.

        False if this server is stopping, or the job is no longer running (that worker failed it, or
        it was cancelled).
        """
        job_dir = joblock.job_dir(self.state_dir, job["id"])
        pid = joblock.holder(job_dir)
        self.say(f"job {job['id']}: adopting the worker (pid {pid}) left by the previous server")
        self.store.add_event(job["id"], f"A worker of the previous server (pid {pid}) is still running this job; "
                             "waiting for it to stop at a checkpoint", level="warn")
        while joblock.holder(job_dir) is not None:
            if self._stopping.wait(timeout=0.5):
                return False
        return self.store.job(job["id"])["status"] in ("queued", "running")

    def _settle(self, job: dict, code: int, log: Path) -> None:
        """Record the outcome of a worker that exited on its own."""
        job_id = job["id"]
        current = self.store.job(job_id)
        if current["status"] != "running":
            self.say(f"job {job_id}: {current['status']}")
            return  # the worker recorded a failure, or the job was cancelled
        if code != 0:
            reason = f"the worker process exited with code {code} without finishing; see {log}"
            if self.store.finish_job(job_id, "failed", error={"code": "worker_exited", "message": reason,
                                                              "param": None}):
                self.store.add_event(job_id, f"Fine-tuning job failed: {reason}", level="error")
            self.say(f"job {job_id}: failed ({reason})")
            return
        name = job["fine_tuned_model_name"]
        try:
            self.publish(job)
        except Exception as exc:  # the model trained but cannot be served: say so with the job
            reason = f"training finished but the model could not be served: {type(exc).__name__}: {exc}"
            self.store.finish_job(job_id, "failed", error={"code": "serve_failed", "message": reason, "param": None})
            self.store.add_event(job_id, reason, level="error")
            return
        if self.store.finish_job(job_id, "succeeded", fine_tuned_model=name):
            self.store.add_event(job_id, f"New fine-tuned model created: {name}")
            self.store.add_event(job_id, "The job has successfully completed")
        self.say(f"job {job_id}: succeeded, serving {name}")


def _terminate(proc: subprocess.Popen, sig: int, grace: float) -> None:
    """Signal the worker, wait up to ``grace`` seconds, then kill it."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
