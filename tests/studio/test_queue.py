"""The studio's run queue through its API: runs go through ``lmtune serve``'s job worker one at a time, a queued run
can be cancelled, a stopped studio loses no run (the next one resumes the interrupted run and runs the queued ones),
the console is the worker's output, and resume re-queues interrupted runs, also ones started outside the studio.

The worker tests train the tiny model for a few steps in real worker processes; the others use a queue that is
not started (its jobs stay queued), which is all that request handling needs.
"""

from __future__ import annotations

import json
import time

import pytest
from conftest import write_recipe
from fastapi.testclient import TestClient
from studio_runs import studio_run

from lmtune.run_dir import RunDir, checkpoint_dirs
from lmtune.studio.app import Studio, create_app
from lmtune.studio.queue import RunQueue

WRITE = {"X-Lmtune-Studio": "1"}
QUICK = {"max_steps": 4, "batch_size": 4, "eval_every": 2, "log_every": 1, "max_length": 64}


def _studio(runs, start: bool = True) -> tuple[TestClient, RunQueue]:
    studio = Studio(runs, hosts={"testserver"})
    studio.queue = RunQueue(studio.state_dir, runs)
    if start:
        studio.queue.start()
    return TestClient(create_app(studio), headers=WRITE), studio.queue


def _recipe(tmp_path, model, data, **training) -> str:
    path = write_recipe(tmp_path / "recipe.yaml", model, data, eval={"systems": ["finetuned"]},
                        training={**QUICK, **training})
    return path.read_text()


def _statuses(client) -> dict[str, str]:
    jobs = client.get("/api/queue").json()["jobs"]
    return {job["name"]: job["status"] for job in reversed(jobs)}  # the newest job of each run wins


def _wait(client, condition, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            consoles = {name: client.get(f"/api/runs/{name}/console").json().get("text", "")[-2000:]
                        for name in _statuses(client)}
            raise AssertionError(f"timed out waiting for {what}: {_statuses(client)}\n{consoles}")
        time.sleep(0.3)


def _row_status(client, name: str) -> str:
    return {r["name"]: r["status"] for r in client.get("/api/runs").json()["runs"]}[name]


def _follow(client, name: str, timeout: float = 240) -> str:
    """The run's console, read piece by piece from the offset each answer gives until the run has ended."""
    text, offset, done = "", 0, False
    deadline = time.monotonic() + timeout
    while not done:
        assert time.monotonic() < deadline, f"{name} did not end: {_statuses(client)}\n{text[-2000:]}"
        piece = client.get(f"/api/runs/{name}/console", params={"offset": offset}).json()
        assert piece["offset"] == offset + len(piece["text"].encode())
        text, offset, done = text + piece["text"], piece["offset"], piece["done"]
        time.sleep(0.2)
    return text


@pytest.fixture
def one_thread_workers(monkeypatch):
    """Worker processes inherit the environment: one thread each, as the tiny model trains fastest on busy cores."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_runs_go_one_at_a_time_can_be_cancelled_and_resumed_and_a_restart_loses_none(
        tmp_path, tiny_model_dir, sentiment_file, one_thread_workers):
    runs = tmp_path / "runs"
    long = _recipe(tmp_path, tiny_model_dir, sentiment_file, max_steps=150, save_every=5, eval_every=1000)
    quick = _recipe(tmp_path, tiny_model_dir, sentiment_file)
    client, first = _studio(runs)
    try:
        names = [client.post("/api/runs", json={"text": text, "source": "recipe.yaml"}).json()["name"]
                 for text in (long, quick, quick)]
        assert names == ["tiny", "tiny-2", "tiny-3"]  # the recipe's name, then the next free one
        _wait(client, lambda: _statuses(client)["tiny"] == "running", "the first run to start")
        pending = {r["name"]: r["status"] for r in client.get("/api/runs").json()["runs"]}
        assert pending["tiny-2"] == pending["tiny-3"] == "queued"
        assert client.post("/api/runs/tiny-3/cancel").json() == {"name": "tiny-3", "status": "cancelled"}
        assert client.post("/api/runs/tiny-3/cancel").status_code == 409  # no longer queued
        _wait(client, lambda: bool(checkpoint_dirs(RunDir(runs / "tiny").checkpoints, complete=True)),
              "a whole checkpoint of the first run")  # not a step-N.tmp being written: a resume would not use it
        assert _statuses(client)["tiny-2"] == "queued"  # still waiting while the first one trains

        assert client.post("/api/runs/tiny/cancel").json() == {"name": "tiny", "status": "cancelled"}
        assert _row_status(client, "tiny") == "cancelled"  # the job's word; the run's status.json says interrupted
        assert client.post("/api/runs/tiny/resume").json() == {"name": "tiny", "status": "queued"}
        assert _row_status(client, "tiny") == "queued"  # behind tiny-2, which the cancel let start
    finally:
        first.stop()  # a running worker is interrupted at a checkpoint and its run resumes at the next start
    assert _statuses(client)["tiny"] == "queued" and _statuses(client)["tiny-3"] == "cancelled"

    client, second = _studio(runs)
    try:
        console = _follow(client, "tiny")  # from before its resumed worker starts until it has ended
        assert _statuses(client) == {"tiny": "finished", "tiny-2": "finished", "tiny-3": "cancelled"}
        rows = {r["name"]: r["status"] for r in client.get("/api/runs").json()["runs"]}
        assert rows == {"tiny": "finished", "tiny-2": "finished"}  # the cancelled run never got a directory
        for name in ("tiny", "tiny-2"):
            run = RunDir(runs / name)
            assert run.read_status()["state"] == "finished" and "finetuned" in run.read_eval()["results"]
        # One console for both attempts: the first (cancelled in training), then the resumed one.
        assert console.index("[1/5] data: reading") < console.index("resuming from") < console.index("[5/5] evaluate")
        assert client.get("/api/runs/nothing-here/console").status_code == 404
    finally:
        second.stop()


def test_resume_requeues_an_interrupted_run_started_outside_the_studio(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the saved recipe names data/drug-reviews-train.jsonl, relative to the cwd
    runs = tmp_path / "runs"
    studio_run(runs, "outside", state="interrupted")
    studio_run(runs, "done")
    studio_run(runs, "busy", state="running")  # on another host: taken as alive
    client, queue = _studio(runs, start=False)  # not started: what it queues stays queued
    refused = client.post("/api/runs/outside/resume")
    assert refused.status_code == 400 and refused.json()["problems"][0]["key"] == "data.train"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "drug-reviews-train.jsonl").write_text(json.dumps({"text": "fine", "label": "neutral"}))
    assert client.post("/api/runs/outside/resume").json() == {"name": "outside", "status": "queued"}
    job = queue.store.jobs()[0]
    assert job["run_dir"] == str((runs / "outside").resolve()) and job["method"] == {"type": "recipe"}
    assert job["recipe"] == RunDir(runs / "outside").read_recipe()  # as saved: a resume must not change it
    rows = {r["name"]: r["status"] for r in client.get("/api/runs").json()["runs"]}
    assert rows == {"outside": "queued", "done": "finished", "busy": "running"}
    assert client.post("/api/runs/outside/resume").status_code == 409  # already queued
    assert client.post("/api/runs/done/resume").status_code == 409
    assert client.post("/api/runs/busy/resume").status_code == 409
    assert client.post("/api/runs/busy/cancel").status_code == 409  # not the studio's to stop
    assert client.post("/api/runs/nothing-here/resume").status_code == 404
    assert client.post("/api/runs/nothing-here/cancel").status_code == 404

    assert client.get("/api/runs/outside/console").json() | {"job": None} == {
        "text": "", "offset": 0, "done": False, "job": None, "status": "queued"}
    assert client.post("/api/runs/outside/cancel").status_code == 200
    rows = {r["name"]: r["status"] for r in client.get("/api/runs").json()["runs"]}
    assert rows["outside"] == "cancelled"  # what the job says; the run's own status.json says interrupted
    assert client.post("/api/runs/outside/resume").status_code == 200  # a cancelled run resumes too
    assert [j["status"] for j in client.get("/api/queue").json()["jobs"]] == ["queued", "cancelled"]


def test_an_app_without_a_queue_refuses_to_change_anything(tmp_path):
    studio_run(tmp_path, "a", state="interrupted")
    client = TestClient(create_app(Studio(tmp_path, hosts={"testserver"})), headers=WRITE)
    for url in ("/api/runs/a/resume", "/api/runs/a/cancel"):
        response = client.post(url)
        assert response.status_code == 503 and "queue" in response.json()["error"]["message"]
    assert client.post("/api/runs", json={"text": "name: x"}).status_code == 503
    assert client.get("/api/queue").json() == {"jobs": []}
