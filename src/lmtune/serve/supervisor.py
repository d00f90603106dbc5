"""Runs fine-tuning jobs one at a time, each in its own worker process, and survives restarts.

On start-up, a job the previous server left ``running`` runs first and resumes from its newest
checkpoint (after ``MAX_ATTEMPTS`` interrupted attempts it is failed with that reason); ``queued``
jobs follow in creation order. Cancelling a running job terminates its process. Stopping the
server interrupts the worker with SIGINT, so the training loop writes a checkpoint before it
exits, and leaves the job ``running`` for the next start. A job whose worker trained successfully
is marked ``succeeded`` only after its model has been registered with the server.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from lmtune.serve.store import Store

MAX_ATTEMPTS = 3
STOP_GRACE_S = 60  # a worker writing its interrupt checkpoint gets this long before it is killed


class Supervisor:
    """The job runner thread of one server.

    Args:
        store: the state database.
        state_dir: where job run directories and worker logs live.
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
        with self._lock:
            if not self.store.update_job(job_id, ["queued", "running"], status="running"):
                return  # cancelled meanwhile
            run_dir = Path(job["run_dir"])
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            log = open(run_dir.parent / "worker.log", "a", encoding="utf-8")
            try:
                proc = subprocess.Popen([sys.executable, "-m", "lmtune.serve.worker", str(self.state_dir), job_id],
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
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
        self._settle(job, proc.returncode, run_dir.parent / "worker.log")

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
