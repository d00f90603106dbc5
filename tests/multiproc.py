"""Running lmtune in several real processes for the tests (torchrun on gloo, the tiny model): the commands,
their environment, and what a run logged."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import forked_cli
import pytest
from conftest import sentiment_records, write_jsonl, write_recipe

from lmtune.distributed import free_port

LMTUNE = [sys.executable, "-m", "lmtune.cli"]
QUICK = {"eval": {"systems": ["finetuned"]}, "training": {"max_steps": 4, "batch_size": 4, "learning_rate": 1e-2,
                                                          "eval_every": 2, "log_every": 1, "max_length": 64}}


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "LMTUNE_DIST_TIMEOUT_S": "120"}


def train(command, recipe, out, *extra, check=True):
    """``command train recipe --out out *extra``; ``LMTUNE`` (one process, or the launcher of ``--processes``) is
    forked with torch imported (``forked_cli``), torchrun's and its workers are new interpreters."""
    args = ["train", str(recipe), "--out", str(out), "--quiet", *map(str, extra)]
    if command == LMTUNE:
        done = forked_cli.run(args, Path.cwd(), env(), 600)
    else:
        done = subprocess.run([*command, *args], env=env(), capture_output=True, text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def accelerate_launch() -> list[str]:
    """``accelerate launch`` of 2 processes, as the README writes it for GPUs (on CPU they use gloo)."""
    return [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
            "--main_process_port", str(free_port()), "-m", "lmtune.cli"]


def train_on_two_nodes(recipe, out, *extra) -> None:
    """``lmtune train`` under torchrun as two machines of one process each (``--nnodes 2 --node_rank 0|1
    --master_addr``), here both on this machine."""
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
            "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    second = subprocess.Popen([*node, "--node_rank", "1", "-m", "lmtune.cli", "train", str(recipe), "--out", str(out),
                               "--quiet", *map(str, extra)], env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        train([*node, "--node_rank", "0", "-m", "lmtune.cli"], recipe, out, *extra)
        _, err = second.communicate(timeout=120)
    finally:
        second.kill()
    assert second.returncode == 0, err[-3000:]
    assert not err.strip(), f"the second node printed: {err[-2000:]}"  # only the main process prints


def assert_refused_before_launch(recipe, out, *extra, key: str) -> None:
    """``lmtune train --resume --processes 2`` refuses what the processes would refuse (on ``key``) before it
    starts them: the launcher is replaced by a failure, in this process."""
    from typer.testing import CliRunner

    from lmtune.cli import app

    def launched(*_):
        raise AssertionError("torchrun was started")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("lmtune.launch.launch", launched)
        done = CliRunner().invoke(app, ["train", str(recipe), "--out", str(out), "--resume", "--processes", "2",
                                        *extra])
    assert done.exit_code == 2, (done.output, done.exception)
    assert done.output.startswith(f"error: {key}: "), done.output


def losses(out: Path, split="train"):
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in lines if r["split"] == split}


def final_tensors(out: Path) -> dict:
    """Every tensor of a run's ``final/`` safetensors files, by name."""
    from safetensors.torch import load_file

    found = sorted((out / "final").glob("*.safetensors"))
    assert found, f"no safetensors in {out / 'final'}"
    return {k: v for f in found for k, v in load_file(str(f)).items()}


def recipe_maker(root: Path, model_dir: Path):
    """``make(name, **sections)``: a quick recipe (QUICK, sections merged in) on the tiny model and reviews."""
    data = write_jsonl(root / "reviews.jsonl", sentiment_records())

    def make(name, **sections):
        merged = {k: {**QUICK.get(k, {}), **sections.get(k, {})} for k in {*QUICK, *sections}}
        return write_recipe(root / f"{name}.yaml", model_dir, data, **merged)
    return make


def start_killable(recipe, out, *extra):
    return subprocess.Popen([*LMTUNE, "train", str(recipe), "--out", str(out), "--quiet", "--processes", "2",
                             *extra], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def killed_after_checkpoint(recipe, out: Path, step: int, *extra) -> None:
    """A 2-process ``lmtune train`` SIGKILLed (its whole process group) once checkpoint ``step`` is written."""
    run = start_killable(recipe, out, *extra)
    wait_for(out / "checkpoints" / f"step-{step}", run)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert_no_process_left(out)


def assert_no_process_left(out: Path, seconds=5) -> None:
    """No process of a killed run is still running (the training processes must not outlive their launcher and
    go on writing ``out``, where ``--resume`` continues)."""
    deadline = time.monotonic() + seconds
    while left := pids_with(str(out)):
        assert time.monotonic() < deadline, f"{len(left)} processes of the killed run still run: {left}"
        time.sleep(0.05)


def pids_with(*args: str) -> list[int]:
    """Live processes with each of ``args`` among their command-line arguments (read from /proc; zombies have
    no command line)."""
    wanted = [a.encode() for a in args]
    found = []
    for proc in Path("/proc").iterdir():
        try:
            have = (proc / "cmdline").read_bytes().split(b"\0") if proc.name.isdigit() else []
        except OSError:  # it ended meanwhile
            continue
        if have and all(a in have for a in wanted):
            found.append(int(proc.name))
    return found


def assert_same_losses(out: Path, reference: Path, tolerance: float = 1e-4) -> None:
    """Both runs logged a training loss at the same steps, equal within ``tolerance``."""
    got, want = losses(out), losses(reference)
    assert sorted(got) == sorted(want), out.name
    for step in want:
        assert abs(got[step] - want[step]) <= tolerance, (out.name, step, got[step], want[step])


def wait_for(path: Path, process, seconds=300):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
