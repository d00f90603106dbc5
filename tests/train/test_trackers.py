"""The trackers of ``tracking:`` (TensorBoard, MLflow, W&B offline, trackio) on a tiny run, each read back with
its own library's reader, offline; a missing library is a recipe error; a resumed run logs no step twice."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli, sentiment_records, write_jsonl, write_recipe

from lmtune.train import loop

ALL = ["jsonl", "tensorboard", "mlflow", "wandb", "trackio"]


def _offline_env(tmp: Path) -> dict[str, str]:
    """The environment of a subprocess run: no user tracker settings, every tracker's home folders under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "WANDB_", "TRACKIO_"))}
    home = str(tmp / "wandb-home")
    return {**env, "HF_HUB_OFFLINE": "1", "TRACKIO_DIR": str(tmp / "trackio"), "WANDB_CONFIG_DIR": home,
            "WANDB_CACHE_DIR": home, "WANDB_DATA_DIR": home}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_model_dir):
    """One tiny run logged to every tracker, in a subprocess (trackio reads ``TRACKIO_DIR`` once, at import)."""
    root = tmp_path_factory.mktemp("tracked")
    data = write_jsonl(root / "reviews.jsonl", sentiment_records())
    recipe = write_recipe(root / "recipe.yaml", tiny_model_dir, data, tracking=ALL)
    env = _offline_env(root)
    done = subprocess.run([sys.executable, "-m", "lmtune.cli", "train", str(recipe), "--out", str(root / "run")],
                          capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = root / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"root": root, "run": run, "env": env, "stderr": done.stderr, "metrics": metrics,
            "train": {m["step"]: m["loss"] for m in metrics if m["split"] == "train"},
            "eval": json.loads((run / "eval.json").read_text())["results"]}


def test_the_console_says_where_each_tracker_writes(tracked):
    line = next(line for line in tracked["stderr"].splitlines() if "tracking:" in line)
    for name in ALL[1:]:
        assert name in line
    assert not (tracked["root"] / "mlruns").exists() and not (tracked["root"] / "wandb").exists()  # nothing in cwd


def test_tensorboard_event_files_hold_every_train_loss(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked["run"] / "tensorboard"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("train/loss")}
    assert logged == pytest.approx(tracked["train"], rel=1e-6)  # float32 in the event file
    assert {"validation/loss", "train/lr", "train/tokens_per_s"} <= set(events.Tags()["scalars"])
    f1 = events.Scalars("eval/finetuned/f1_macro")[-1]
    assert f1.step == max(tracked["train"]) and f1.value == pytest.approx(tracked["eval"]["finetuned"]["f1_macro"])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_mlflow_search_runs_finds_parameters_metrics_intervals_and_artifacts(tracked, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tracked['run'] / 'mlflow' / 'mlflow.db'}")
    [found] = mlflow.search_runs(experiment_names=["lmtune"], output_format="list")
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    params, logged = found.data.params, found.data.metrics
    assert params["training.learning_rate"] == "0.01" and params["method.name"] == "lora"
    assert params["method.peft.r"] == "4" and json.loads(params["eval.systems"]) == ["zero_shot", "few_shot",
                                                                                     "finetuned"]
    steps = sorted(tracked["train"])
    assert logged["train/loss"] == pytest.approx(tracked["train"][steps[-1]])  # the final loss
    finetuned = tracked["eval"]["finetuned"]
    low, high = finetuned["ci"]["f1_macro"]
    assert logged["eval/finetuned/f1_macro"] == pytest.approx(finetuned["f1_macro"])
    assert (logged["eval/finetuned/f1_macro_ci_low"], logged["eval/finetuned/f1_macro_ci_high"]) == pytest.approx(
        (low, high))
    history = mlflow.MlflowClient().get_metric_history(found.info.run_id, "train/loss")
    assert [m.step for m in history] == steps
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(found.info.run_id)}
    assert artifacts == {"report.html", "manifest.json"}


def _wandb_records(run_file: Path) -> list[dict]:
    """The records of a ``.wandb`` transaction log, read by wandb's own reader (``wandb leet inspect --json``)."""
    done = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_file)],
                          capture_output=True, text=True, timeout=120, check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_wandb_offline_run_file_holds_the_history_config_summary_and_files(tracked):
    [run_file] = (tracked["run"] / "wandb").glob("offline-run-*/run-*.wandb")
    records = _wandb_records(run_file)
    history = {r["history"]["step"]["num"]: r["history"]["item"] for r in records if r["type"] == "history"}
    assert {step: item["train/loss"] for step, item in history.items()} == pytest.approx(tracked["train"])
    config = next(r["run"]["config"]["update"] for r in records if r["type"] == "run")
    assert config["training.learning_rate"] == 0.01 and config["method.name"] == "lora"
    summary = {k: v for r in records if r["type"] == "summary" for k, v in r["summary"].get("update", {}).items()}
    assert summary["eval/finetuned/f1_macro"] == pytest.approx(tracked["eval"]["finetuned"]["f1_macro"])
    files = {f["path"] for r in records if r["type"] == "files" for f in r["files"]["files"]}
    assert {"report.html", "manifest.json"} <= files
    assert next(r["exit"]["exit_code"] for r in records if r["type"] == "exit") in (0, None)


def test_trackio_local_store_holds_the_metrics_and_parameters(tracked):
    # trackio's own API, in a process whose TRACKIO_DIR is the one the run wrote to.
    read = ("import json, trackio; from trackio.sqlite_storage import SQLiteStorage as S; "
            "[run] = trackio.Api().runs('lmtune'); "
            "print(json.dumps({'logs': S.get_logs('lmtune', run.name), 'config': run.config, 'name': run.name}))")
    done = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, env=tracked["env"],
                          timeout=120, check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["name"] == "run" and found["config"]["training.learning_rate"] == 0.01
    train = {log["step"]: log["train/loss"] for log in found["logs"] if "train/loss" in log}
    assert train == pytest.approx(tracked["train"])
    evals = [log for log in found["logs"] if "eval/finetuned/f1_macro" in log]
    assert evals and evals[-1]["eval/finetuned/f1_macro"] == pytest.approx(tracked["eval"]["finetuned"]["f1_macro"])


def test_a_tracker_whose_library_is_missing_is_a_recipe_error_naming_the_extra(recipe_file, tmp_path):
    # The packages made unimportable, as if they were not installed (find_spec then finds nothing).
    program = ("import sys; sys.modules.update(dict.fromkeys(['tensorboard', 'mlflow', 'wandb', 'trackio'])); "
               "from lmtune.cli import main; sys.argv = ['lmtune', *sys.argv[1:]]; main()")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", program, "train", str(recipe_file(tracking=ALL)), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_offline_env(tmp_path))
    assert done.returncode == 2, done.stderr
    hints = [f"the {name} tracker needs the {name} package: pip install 'lmtune[{name}]'" for name in ALL[1:]]
    assert done.stderr.strip().splitlines() == ["error: tracking: " + "; ".join(hints)]
    assert not out.exists() and "[1/5]" not in done.stderr  # stopped before anything slow started


def test_an_unknown_tracker_is_an_error_listing_the_known_ones(recipe_file):
    code, output = run_cli("train", recipe_file(tracking=["jsonl", "comet"]))
    assert code == 2 and "error: tracking.1:" in output
    assert all(name in output for name in ALL)


def test_a_resumed_run_continues_its_tracker_runs_without_logging_a_step_twice(recipe_file, tmp_path, monkeypatch):
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    real = loop.log_train

    def crash_after_step_3(run):
        real(run)
        if run.state.step == 3:  # logged to every tracker; the newest checkpoint is step 2's
            raise RuntimeError("power cut")

    for key, value in _offline_env(tmp_path).items():
        if key.startswith("WANDB_"):
            monkeypatch.setenv(key, value)
    recipe, out = recipe_file(tracking=["tensorboard", "mlflow", "wandb"], training={"save_every": 2}), tmp_path / "run"
    monkeypatch.setattr(loop, "log_train", crash_after_step_3)
    code, _ = run_cli("train", recipe, "--out", out, "--quiet")
    assert code != 0
    monkeypatch.setattr(loop, "log_train", real)
    code, output = run_cli("train", recipe, "--out", out, "--quiet", "--resume")
    assert code == 0, output

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow' / 'mlflow.db'}")
    [found] = mlflow.search_runs(experiment_names=["lmtune"], output_format="list")  # the same run, continued
    assert found.info.status == "FINISHED" and "eval/finetuned/f1_macro" in found.data.metrics
    history = mlflow.MlflowClient().get_metric_history(found.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    attempts = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(attempts) == 2 and len({p.name for p in attempts}) == 1  # one W&B run id, resumed
    steps = [r["history"]["step"]["num"] for f in attempts for r in _wandb_records(f) if r["type"] == "history"]
    assert sorted(steps) == [1, 2, 3, 4]
