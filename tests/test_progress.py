"""Progress when stderr is not a terminal: plain lines instead of a silently disabled tqdm bar."""

import re

import pytest
from tiny import build_tokenizer, method_model, train_examples, train_settings

from lmtune import progress
from lmtune.train import loop

LINE = re.compile(r"^train: (\d+)/(\d+) steps \((\d+)%\), [\d.]+ steps/s, ETA \S+")


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


class FakeClock:
    """A clock the test advances by hand, so rate and ETA are known exactly."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_plain_line_reports_count_percent_rate_eta_and_postfix(capsys):
    clock = FakeClock()
    bar = progress.bar(500, "train", "step", interval=30, clock=clock)
    clock.now += 10
    bar.update(20)  # 10 s after start: the 30 s interval has not passed, nothing printed
    assert capsys.readouterr().err == ""
    clock.now += 30
    bar.update(80)  # 100 steps in 40 s: 2.5 steps/s, 400 left: 160 s
    bar.set_postfix(loss="0.4321")
    assert capsys.readouterr().err == "train: 100/500 steps (20%), 2.5 steps/s, ETA 2m40s\n"
    clock.now += 10
    bar.update(20)  # printed 10 s ago: quiet again
    assert capsys.readouterr().err == ""
    bar.close()  # 120 steps in 50 s: 2.4 steps/s, 380 left: 158.33 s
    assert capsys.readouterr().err == "train: 120/500 steps (24%), 2.4 steps/s, ETA 2m38s, loss=0.4321\n"
    bar.close()  # a second close (a ``finally`` after a ``with``) prints nothing more
    assert capsys.readouterr().err == ""


def test_rate_counts_only_this_sessions_work_when_resumed(capsys):
    clock = FakeClock()
    with progress.bar(100, "predict", "rec", initial=40, interval=0, clock=clock) as bar:
        clock.now += 4
        bar.update(10)  # 10 records in 4 s, not 50
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "predict: 50/100 rec (50%), 2.5 rec/s, ETA 0m20s"
    assert len(lines) == 2 and lines[1].startswith("predict: 50/100 rec (50%)")


def test_env_var_sets_the_interval_and_quiet_prints_nothing(capsys, monkeypatch):
    monkeypatch.setenv("LMTUNE_PROGRESS_INTERVAL", "0")
    clock = FakeClock()
    bar = progress.bar(3, "score", "ex", clock=clock)
    for _ in range(3):
        clock.now += 1
        bar.update(1)
    bar.close()
    assert len(capsys.readouterr().err.splitlines()) == 4  # three updates and the final line
    silent = progress.bar(3, "score", "ex", quiet=True, clock=clock)
    silent.update(3)
    silent.set_postfix(loss="1.0")
    silent.close()
    assert capsys.readouterr().err == ""


def test_hours_in_the_eta(capsys):
    clock = FakeClock()
    bar = progress.bar(10_000, "train", "step", interval=0, clock=clock)
    clock.now += 10
    bar.update(2)  # 0.2 steps/s, 9998 left: 49990 s
    assert "ETA 13h53m10s" in capsys.readouterr().err


def _train_and_read_stderr(tok, tmp_path, capsys, monkeypatch, quiet: bool) -> str:
    """A 4-step tiny training with validation every 2 steps, stderr not a terminal; what it printed there."""
    monkeypatch.setenv("LMTUNE_PROGRESS_INTERVAL", "0")
    data = train_examples(tok, 16)
    loop.train(method_model(tok), data[:12], data[12:], train_settings(max_steps=4, eval_every=2), tmp_path,
               tok.pad_token_id, quiet=quiet)
    return capsys.readouterr().err


def test_training_without_a_terminal_prints_progress_and_validation_loss(tok, tmp_path, capsys, monkeypatch):
    err = _train_and_read_stderr(tok, tmp_path, capsys, monkeypatch, quiet=False)
    progress_lines = [m for m in map(LINE.match, err.splitlines()) if m]
    assert [int(m.group(1)) for m in progress_lines][:4] == [1, 2, 3, 4]
    assert all(m.group(2) == "4" for m in progress_lines)
    assert "loss=" in err
    val = re.findall(r"^step (\d+): validation loss (\d\.\d{4}) \(best (\d\.\d{4}) at step (\d+)\)$", err, re.MULTILINE)
    assert [int(v[0]) for v in val] == [2, 4]


def test_quiet_training_prints_no_progress(tok, tmp_path, capsys, monkeypatch):
    err = _train_and_read_stderr(tok, tmp_path, capsys, monkeypatch, quiet=True)
    assert "train:" not in err and "validation loss" not in err


@pytest.mark.parametrize("quiet", [False, True])
def test_a_terminal_still_gets_tqdm(monkeypatch, quiet):
    from tqdm.auto import tqdm
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    bar = progress.bar(5, "train", "step", quiet=quiet)
    assert isinstance(bar, tqdm) and bar.disable == quiet
    bar.close()


def test_what_libraries_print_goes_to_stderr_while_stdout_keeps_the_output():
    """``lmtune estimate --json``: DeepSpeed announces the ops it builds on stdout, from Python and from the
    compiler it starts; inside ``stdout_to_stderr`` both land on stderr, and stdout is the JSON alone."""
    import subprocess
    import sys

    script = ("import json, os, subprocess\n"
              "from lmtune.progress import stdout_to_stderr\n"
              "with stdout_to_stderr():\n"
              "    print('from python')\n"
              "    subprocess.run(['echo', 'from a child process'])\n"
              "print(json.dumps({'ok': True}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"ok": true}\n'
    assert "from python" in done.stderr and "from a child process" in done.stderr
