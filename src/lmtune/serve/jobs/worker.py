"""``python -m lmtune.serve.jobs.worker STATE_DIR JOB_ID [SERVER_PID]``: run one fine-tuning job (the server's worker).

The job's recipe runs through the whole lifecycle into the job's run directory; a run directory
left by an interrupted attempt is resumed from its newest checkpoint. Training and validation
losses become job events as ``metrics.jsonl`` grows. The worker records failures itself; on
success it exits 0 and leaves the job ``running``, so the server marks it succeeded only once
its model is being served.

A worker first takes the job's lock (``joblock``) and holds it until it exits; if another live
process holds it, it exits ``EXIT_BUSY`` at once, having changed nothing. With ``SERVER_PID`` it
watches its server: once that process is gone (its parent pid changes, e.g. after kill -9 of the
server) it interrupts itself as Ctrl-C would, so the training loop writes a checkpoint, and the
next server resumes the job from there. A job whose model was already trained (a worker recorded
exit 0, then its server died before marking the job) is not trained again: the worker exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from lmtune.progress import say
from lmtune.run_dir import RunDir
from lmtune.serve.jobs import joblock
from lmtune.serve.jobs.store import Store

EXIT_INTERRUPTED = 130
EXIT_BUSY = 75  # another live worker holds the job (EX_TEMPFAIL): nothing was done, try again later
WATCH_INTERVAL_S = 0.5


class MetricsEvents:
    """Turns new lines of a run's ``metrics.jsonl`` into job events, every ``interval`` seconds and once at the end."""

    def __init__(self, run: RunDir, store: Store, job_id: str, interval: float = 1.0):
        self.run, self.store, self.job_id, self.interval = run, store, job_id, interval
        self.seen = {(e["data"].get("step"), e["data"].get("split")) for e in store.events(job_id)
                     if e["type"] == "metrics" and e["data"]}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()
        self.poll(final=True)

    def poll(self, final: bool = False) -> None:
        """Report the new lines of metrics.jsonl. Each training line's speed is in timing.jsonl, written just
        before the line itself, but read here first: a step written between the two reads waits for the next
        poll, so that its event has its speed (the ``final`` poll, after training, reports what is left)."""
        if not self.run.metrics.exists():
            return
        speed = {r.get("step"): r.get("tokens_per_s") for r in _complete_lines(self.run.timing)}
        for record in _complete_lines(self.run.metrics):
            key = (record.get("step"), record.get("split"))
            if key in self.seen or "loss" not in record:
                continue
            if record.get("split") == "train" and record.get("step") not in speed and not final:
                continue
            self.seen.add(key)
            what = "training" if record.get("split") == "train" else "validation"
            data = {"step": record["step"], "split": record.get("split"), **openai_metrics(record)}
            if record.get("split") == "train" and speed.get(record["step"]) is not None:
                data["tokens_per_s"] = speed[record["step"]]
            reward = f", reward mean={record['reward']:.4f}" if record.get("reward") is not None else ""
            self.store.add_event(self.job_id, f"Step {record['step']}: {what} loss={record['loss']:.4f}{reward}",
                                 kind="metrics", data=data)


def openai_metrics(record: dict) -> dict:
    """A ``metrics.jsonl`` line in the names of OpenAI's metrics events and checkpoints: ``train_loss`` or
    ``valid_loss``, and for a reinforcement (GRPO) job the mean reward, ``train_reward_mean`` (over the step's
    sampled completions) or ``valid_reward_mean`` (over the greedy answers to the held-out prompts)."""
    prefix = "train" if record.get("split") == "train" else "valid"
    out = {f"{prefix}_loss": record["loss"]}
    if record.get("reward") is not None:
        out[f"{prefix}_reward_mean"] = record["reward"]
    return out


def _complete_lines(path: Path) -> list[dict]:
    """The records of a JSONL file the training loop is appending to (a line being written is skipped)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def run_job(state_dir: Path, job_id: str) -> int:
    """Run the job; return the process exit code (0 trained, 2 bad input, 1 internal error, 130 interrupted)."""
    from lmtune.errors import UserError
    from lmtune.lifecycle import run_recipe
    from lmtune.recipe import recipe_from_dict

    store = Store(state_dir / "state.db")
    job = store.job(job_id)
    run_dir = RunDir(job["run_dir"])
    resume = run_dir.path.exists() and any(run_dir.path.iterdir())
    store.add_event(job_id, "Resuming the fine-tuning job from its newest checkpoint" if resume
                    else "Fine-tuning job started")
    # A recipe the studio queued says what it does in worker.log, which the studio shows as the run's console.
    quiet = (job["method"] or {}).get("type") != "recipe"
    try:
        with MetricsEvents(run_dir, store, job_id):
            run_recipe(recipe_from_dict(job["recipe"], source=f"job {job_id}"), out=run_dir.path, resume=resume,
                       quiet=quiet)
    except UserError as exc:
        _fail(store, job_id, "invalid_training_data", str(exc), exc.source)
        return 2
    except KeyboardInterrupt:
        store.add_event(job_id, "Interrupted; the job resumes from its newest checkpoint when the server starts "
                        "again", level="warn")
        return EXIT_INTERRUPTED
    except Exception as exc:  # anything else is our bug: record it with the job, keep the traceback in the log
        traceback.print_exc()
        _fail(store, job_id, "internal_error", f"{type(exc).__name__}: {exc}", None)
        return 1
    tokens = run_dir.read_eval().get("training", {}).get("train_tokens")
    if tokens is not None:
        store.update_job(job_id, ["running"], trained_tokens=int(tokens))
    return 0


def _fail(store: Store, job_id: str, code: str, message: str, param: str | None) -> None:
    if store.finish_job(job_id, "failed", error={"code": code, "message": message, "param": param}):
        store.add_event(job_id, f"Fine-tuning job failed: {message}", level="error")


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C semantics whatever this process inherited: a server started in the background (nohup, `&`,
    # many init scripts) passes SIGINT on as ignored, and the stop signal would then never reach the loop.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = argv or sys.argv[1:]
    state_dir, job_id = Path(args[0]), args[1]
    server = int(args[2]) if len(args) > 2 else None
    if server is not None and os.getppid() != server:
        return EXIT_INTERRUPTED  # the server that started us is already gone: leave the job to the next one
    job_dir = joblock.job_dir(state_dir, job_id)
    if joblock.acquire(job_dir) is None:  # the descriptor stays open, holding the lock, until this process ends
        say(f"job {job_id}: another worker (pid {joblock.holder(job_dir)}) holds it; exiting")
        return EXIT_BUSY
    if joblock.last_exit(job_dir) == 0:
        say(f"job {job_id}: its model was already trained")
        return 0
    if server is not None:
        threading.Thread(target=_watch_server, args=(server,), name="lmtune-watch-server", daemon=True).start()
    try:
        code = run_job(state_dir, job_id)
    except KeyboardInterrupt:  # interrupted before or after the training loop, which handles its own
        code = EXIT_INTERRUPTED
    joblock.record_exit(job_dir, code)
    return code


def _watch_server(server: int) -> None:
    """Interrupt this worker (as Ctrl-C would: checkpoint, then exit) once the server that started it is gone."""
    while os.getppid() == server:
        time.sleep(WATCH_INTERVAL_S)
    say(f"the server (pid {server}) is gone; stopping at a checkpoint")
    os.kill(os.getpid(), signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
