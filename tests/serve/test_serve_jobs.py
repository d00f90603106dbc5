"""The fine-tuning job queue (``lmtune.serve.jobs``): jobs survive a restart, a killed server never leaves two
workers on a job, a worker left by a dead server is adopted, and a job's recipe always trains.

The restart test stops the server with jobs still queued and checks that a new server on the same
state directory finishes them.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from multiproc import pids_with
from serving import QUICK, chat_jsonl, wait

from lmtune.serve.http.server import Server


@pytest.fixture
def sigint_ignored():
    """This process ignores SIGINT, as one started in the background (nohup, `&`) does; children inherit that."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, previous)


def test_restart_mid_queue_loses_no_job(tiny_model_dir, tmp_path, sigint_ignored):
    state = tmp_path / "state"
    first = Server([str(tiny_model_dir)], port=0, state_dir=state, quiet=True).start()
    client = openai.OpenAI(base_url=first.url + "/v1", api_key="x", max_retries=0)
    upload = client.files.create(file=("train.jsonl", chat_jsonl()), purpose="fine-tune")
    # Long enough (about 20 s on 2 loaded cores) that the server stops mid-training, not after the last step.
    slow = {"type": "supervised", "lmtune": {"training": {"max_steps": 60, "batch_size": 2, "save_every": 4,
                                                           "eval_every": 1000}}}
    jobs = [client.fine_tuning.jobs.create(model=tiny_model_dir.name, training_file=upload.id, suffix=f"r{i}",
                                           method=method).id for i, method in enumerate([slow, QUICK])]
    deadline = time.monotonic() + 120
    while not client.fine_tuning.jobs.checkpoints.list(jobs[0]).data:  # training, with a checkpoint on disk
        assert time.monotonic() < deadline, "the first job wrote no checkpoint"
        time.sleep(0.1)
    first.stop()
    assert [job_row(state, j)["status"] for j in jobs] == ["running", "queued"]

    second = Server([str(tiny_model_dir)], port=0, state_dir=state, quiet=True).start()
    try:
        client = openai.OpenAI(base_url=second.url + "/v1", api_key="x", max_retries=0)
        finished = [wait(client, j) for j in jobs]
        assert [j.status for j in finished] == ["succeeded", "succeeded"], [j.error for j in finished]
        served = {m.id for m in client.models.list()}
        assert {j.fine_tuned_model for j in finished} <= served
        events = [e.message for e in client.fine_tuning.jobs.list_events(jobs[0], limit=200)]
        assert "Resuming the fine-tuning job from its newest checkpoint" in events
    finally:
        second.stop()
    log = (state / "jobs" / jobs[0] / "worker.log").read_text()
    assert "resuming from" in log and "step-" in log  # the training loop continued from a checkpoint
    # A third start serves the models of finished jobs without training anything again.
    third = Server([str(tiny_model_dir)], port=0, state_dir=state, quiet=True)
    try:
        assert {j.fine_tuned_model for j in finished} <= set(third.state.registry.names())
    finally:
        third.state.registry.close()
        third._release()


SERVE = ("import sys; from lmtune.serve.http.server import Server; "
         "Server([sys.argv[1]], port=int(sys.argv[2]), state_dir=sys.argv[3], quiet=True).run()")


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds worker processes through /proc")
def test_a_killed_server_never_leaves_two_workers_on_a_job(tiny_model_dir, tmp_path):
    """kill -9 of the server leaves its worker alive; the next server must not run the job beside it."""
    state = tmp_path / "state"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen([sys.executable, "-c", SERVE, str(tiny_model_dir), str(port), str(state)],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    second, most = None, 0
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=2)
        wait_until(lambda: _healthy(port) or first.poll() is not None, 120, "the first server to start")
        upload = client.files.create(file=("train.jsonl", chat_jsonl()), purpose="fine-tune")
        steps = 40
        method = {"type": "supervised", "lmtune": {"training": {"max_steps": steps, "batch_size": 2, "save_every": 10,
                                                                 "eval_every": 1000, "log_every": 1}}}
        job = client.fine_tuning.jobs.create(model=tiny_model_dir.name, training_file=upload.id, method=method).id
        metrics = state / "jobs" / job / "run" / "metrics.jsonl"
        wait_until(lambda: max(_train_steps(metrics), default=0) >= 12, 120, "training to pass a checkpoint")
        first.send_signal(signal.SIGKILL)  # the server only: its worker runs in a session of its own
        first.wait()
        assert len(_workers(state)) == 1
        second = Server([str(tiny_model_dir)], port=0, state_dir=state, quiet=True).start()
        client = openai.OpenAI(base_url=second.url + "/v1", api_key="x", max_retries=0)
        deadline = time.monotonic() + 180
        while (status := client.fine_tuning.jobs.retrieve(job).status) in ("queued", "running"):
            most = max(most, len(_workers(state)))
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.1)
        assert status == "succeeded", client.fine_tuning.jobs.retrieve(job).error
    finally:
        first.kill()
        if second is not None:
            second.stop()
        for pid in _workers(state):  # a worker left by the killed server must not outlive the test
            os.kill(pid, signal.SIGKILL)
    assert most <= 1, f"{most} workers ran the job at once"
    assert _train_steps(metrics) == list(range(1, steps + 1))  # one writer: every step once, in order
    events = list(reversed(_events(state, job)))
    keys = [(e["data"]["step"], e["data"]["split"]) for e in events if e["type"] == "metrics"]
    assert len(keys) == len(set(keys)), "a step's loss was reported twice"
    train_events = [e["data"] for e in events if e["type"] == "metrics" and e["data"]["split"] == "train"]
    assert train_events and all(d["tokens_per_s"] > 0 for d in train_events)  # read from timing.jsonl
    messages = [e["message"] for e in events]
    assert messages.count("Fine-tuning job started") == 1
    assert messages.count("The job has successfully completed") == 1


HOLD = ("import sys, time; from pathlib import Path; from lmtune.serve.jobs import joblock; job = Path(sys.argv[1]); "
        "assert joblock.acquire(job) is not None; time.sleep(float(sys.argv[2])); joblock.record_exit(job, 0)")


def test_a_job_held_by_a_live_worker_is_adopted_not_run_twice(tmp_path):
    """A worker of a dead server still holds the job: the new server waits for it, then settles its result."""
    from lmtune.serve.jobs import joblock
    from lmtune.serve.jobs.store import Store
    from lmtune.serve.jobs.supervisor import Supervisor

    store = Store(tmp_path / "state.db")
    job_dir = tmp_path / "jobs" / "ftjob-held"
    row = {"id": "ftjob-held", "created_at": 0, "model": "m", "base_ref": "m", "training_file": "file-x",
           "validation_file": None, "hyperparameters": {}, "method": {}, "suffix": None, "seed": 0, "metadata": None,
           "recipe": {"not": "a recipe: a second worker would fail the job"}, "run_dir": str(job_dir / "run"),
           "fine_tuned_model_name": "ft:m::ftjob-held", "status": "running"}
    store.add_job(row)
    held = subprocess.Popen([sys.executable, "-c", HOLD, str(job_dir), "3"])  # the orphan: trains 3 s, succeeds
    published = []
    try:
        wait_until(lambda: joblock.holder(job_dir) is not None, 30, "the orphan to take the lock")
        supervisor = Supervisor(store, tmp_path, published.append).start()
        try:
            wait_until(lambda: store.job("ftjob-held")["status"] != "running", 60, "the job to be settled")
        finally:
            supervisor.stop()
    finally:
        held.kill()
    assert store.job("ftjob-held")["status"] == "succeeded", store.job("ftjob-held")["error"]
    assert [j["id"] for j in published] == ["ftjob-held"]
    assert held.wait() == 0 and not (job_dir / "worker.log").exists()  # no worker of this server ever started
    assert any(e["message"].startswith("A worker of the previous server") for e in store.events("ftjob-held"))


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _events(state: Path, job_id: str) -> list[dict]:
    from lmtune.serve.jobs.store import Store

    return Store(state / "state.db").events(job_id)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _train_steps(metrics: Path) -> list[int]:
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    return [r["step"] for r in map(json.loads, filter(None, lines)) if r.get("split") == "train"]


def _workers(state: Path) -> list[int]:
    """Pids of live job workers of this state directory."""
    return pids_with("lmtune.serve.jobs.worker", str(state))


def job_row(state_dir, job_id: str) -> dict:
    from lmtune.serve.jobs.store import Store

    return Store(state_dir / "state.db").job(job_id)


def test_a_job_always_trains_whatever_eval_systems_its_method_names(tmp_path):
    from lmtune.serve.jobs.recipe import build_recipe, resolve_hyperparameters

    train = {"path": str(tmp_path / "train.jsonl"), "summary": {"format": "chat", "records": 40}}
    recipe = build_recipe("ftjob-1", "tiny", train, None, resolve_hyperparameters(None),
                          {"type": "supervised", "lmtune": {"eval": {"systems": ["zero_shot"]}}}, seed=0)
    assert recipe["eval"]["systems"] == ["zero_shot", "finetuned"]
