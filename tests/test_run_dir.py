"""RunDir names every path of a run and reads and writes its files in the formats the stages always wrote."""

import json

import yaml
from conftest import run_cli

from lmtune.run_dir import (
    DataDir,
    RunDir,
    checkpoint_dirs,
    read_model_info,
    run_final,
    run_of,
    write_model_info,
)


def _named(run: RunDir, relative: str) -> bool:
    """Whether RunDir has a name for the file at ``relative`` (inside a folder it names, for the model files)."""
    path = run.path / relative
    files = {run.recipe, run.manifest, run.status, run.metrics, run.timing, run.eval, run.report, run.data.report,
             run.best_weights, run.final_info}
    files |= {run.data.split(name) for name in ("train", "validation", "test")}
    files |= {run.prediction(system) for system in run.prediction_systems()}
    # A checkpoint's and the final model's own files are the checkpoint's and the method's to name.
    folders = [run.final, *checkpoint_dirs(run.checkpoints)]
    return path in files or any(folder in path.parents for folder in folders)


def test_every_file_a_run_writes_is_named_by_run_dir(recipe_file, tmp_path):
    out = tmp_path / "run"
    code, output = run_cli("train", recipe_file(), "--out", out, "--quiet")
    assert code == 0, output
    run = RunDir(out)
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written and [name for name in written if not _named(run, name)] == []
    assert run.is_run and run.has_work
    assert set(run.prediction_systems()) == {"zero_shot", "few_shot", "finetuned"}
    assert [p.name for p in checkpoint_dirs(run.checkpoints, complete=True)] == ["step-2", "step-4"]
    # What the stages wrote, RunDir reads back.
    assert run.read_recipe()["name"] == "tiny"
    assert set(run.read_eval()["results"]) == {"zero_shot", "few_shot", "finetuned"}
    assert len(run.read_predictions("finetuned")) == run.read_eval()["n"]
    assert run.read_final_info()["method"] == "lora"
    assert run_final(out) == run.final and run_final(run.final) == run.final and run_final(tmp_path) is None
    assert run_of(run.final) == run


def test_files_are_written_in_the_formats_of_the_run_directory(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_recipe({"name": "x", "seed": 0, "eval": {"systems": ["zero_shot"]}})
    assert run.recipe.read_text() == "name: x\nseed: 0\neval:\n  systems:\n  - zero_shot\n"  # the recipe's key order
    run.write_eval({"task": "classification", "n": 2, "note": "é"})
    assert run.eval.read_text(encoding="utf-8") == '{\n  "task": "classification",\n  "n": 2,\n  "note": "é"\n}\n'
    run.write_predictions("zero_shot", [{"input": "a", "prediction": "b"}, {"input": "c", "prediction": "d"}])
    assert run.prediction("zero_shot").read_text() == ('{"input": "a", "prediction": "b"}\n'
                                                       '{"input": "c", "prediction": "d"}\n')
    assert run.read_predictions("zero_shot")[1] == {"input": "c", "prediction": "d"}
    assert run.read_predictions("few_shot") == []
    run.final.mkdir()
    write_model_info(run.final, {"method": "lora", "head": False})
    assert run.final_info.read_text() == '{\n  "method": "lora",\n  "head": false\n}'  # no newline, as always
    assert read_model_info(run.final) == run.read_final_info() == {"method": "lora", "head": False}
    assert yaml.safe_load(run.recipe.read_text()) == run.read_recipe()
    assert json.loads(run.eval.read_text()) == run.read_eval()


def test_markers_and_defaults(tmp_path):
    run = RunDir(tmp_path)
    assert not run.is_run and not run.has_work
    run.recipe.write_text("")
    assert not run.is_run and run.read_recipe() == {}  # an empty recipe reads as none
    run.manifest.write_text("{}")
    assert run.is_run
    assert RunDir.at(None, "tiny").path.as_posix() == "runs/tiny" and RunDir.at(tmp_path, "tiny") == run
    assert RunDir(run) == run and str(run) == str(tmp_path)  # a RunDir is path-like
    assert run.data == DataDir(tmp_path / "data") and run.data.split("test").name == "test.jsonl"
    for step in (10, 2):
        run.checkpoint(step).mkdir(parents=True)
    (run.checkpoints / "step-3.tmp").mkdir()  # half-written: never listed
    assert [p.name for p in checkpoint_dirs(run.checkpoints)] == ["step-2", "step-10"]
    assert checkpoint_dirs(run.checkpoints, complete=True) == []  # no loop state written in them
