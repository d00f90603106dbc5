"""``status.json``: what the lifecycle writes as a run starts and stops, and how a dead run is recognised."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lmtune import run_status
from lmtune.run_dir import RunDir


def test_finished_failed_and_interrupted_are_recorded_with_the_time_spent(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    with run_status.kept(run):
        assert run_status.read(run)["state"] == "running"
    done = run_status.read(run)
    assert done["state"] == "finished" and done["attempts"] == 1 and done["elapsed_s"] >= 0
    with pytest.raises(ValueError), run_status.kept(run):
        raise ValueError("bad\nsecond line")
    failed = run_status.read(run)
    assert failed["state"] == "failed" and failed["error"] == "ValueError: bad" and failed["attempts"] == 2
    assert failed["started_at"] == done["started_at"]  # the first attempt's start is kept
    with pytest.raises(KeyboardInterrupt), run_status.kept(run):
        raise KeyboardInterrupt
    assert run_status.read(run)["state"] == "interrupted"


def test_a_running_run_whose_process_is_gone_reads_as_interrupted(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with run_status.kept(run):
        body = run.read_status()
    run.write_status({**body, "state": "running", "pid": int(gone.stdout)})
    status = run_status.read(run)
    assert status["state"] == "interrupted" and "--resume" in status["error"]


def test_only_the_main_process_writes_and_a_removed_run_is_left_alone(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    with run_status.kept(run, main=False):
        pass
    assert not run.status.exists()
    with pytest.raises(RuntimeError), run_status.kept(run):
        run.status.unlink()
        run.path.rmdir()  # a run that failed before its first result removes its directory
        raise RuntimeError("early failure")
    assert not run.path.exists()


def test_runs_from_before_status_json_are_judged_by_their_files(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    assert run_status.read(run)["state"] == "interrupted"
    run.eval.write_text("{}")
    run.report.write_text("<html></html>")
    assert run_status.read(run)["state"] == "finished"
