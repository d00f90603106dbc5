"""The run manifest records exact data bytes, versions and provenance, written atomically."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from lmtune import manifest as mf
from lmtune.errors import UserError

MODEL = {"ref": "tiny", "kind": "local", "path": "/x/tiny", "origin": "local directory /x/tiny",
         "sha256": None}


@pytest.fixture
def data(tmp_path):
    train = tmp_path / "train.jsonl"
    # Bigger than one read chunk so the streamed hash is exercised across chunk boundaries.
    train.write_bytes(b'{"text": "a"}\n' * 200_000)
    test = tmp_path / "test.jsonl"
    test.write_text('{"text": "b"}\n')
    return {"train": train, "test": str(test)}


def test_data_files_are_hashed_like_hashlib(data):
    m = mf.build_manifest(seed=7, data_files=data, model_source=MODEL)
    for name, path in data.items():
        raw = open(path, "rb").read()
        assert m["data"][name]["sha256"] == hashlib.sha256(raw).hexdigest()
        assert m["data"][name]["bytes"] == len(raw)
    assert mf.sha256_file(data["train"], chunk_size=1000) == m["data"]["train"]["sha256"]


def test_written_manifest_is_complete_json(tmp_path, data, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lmtune", "train", "recipe.yaml"])
    run_dir = tmp_path / "runs" / "r1"
    written = mf.write_manifest(run_dir, seed=42, data_files=data, model_source=MODEL,
                                extra={"method": "lora", "out": tmp_path})
    on_disk = json.loads((run_dir / "manifest.json").read_text())
    assert on_disk["seed"] == 42 and on_disk["model"] == MODEL
    assert on_disk["command"] == ["lmtune", "train", "recipe.yaml"]
    assert on_disk["method"] == "lora" and on_disk["out"] == str(tmp_path)
    assert on_disk["packages"]["torch"] and on_disk["packages"]["transformers"]
    assert "datasets" in on_disk["packages"] or "datasets" not in written["packages"]
    assert on_disk["lmtune_version"] and on_disk["created_at"].endswith("+00:00")
    assert set(on_disk["device"]) >= {"cuda_available", "device_name"}
    assert [p.name for p in run_dir.iterdir()] == ["manifest.json"]  # no temp file left


def test_git_commit_is_null_outside_a_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert mf.build_manifest(seed=0, data_files={}, model_source=MODEL)["git_commit"] is None


def test_git_commit_inside_a_repo(tmp_path, monkeypatch):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    try:
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
        subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "x"], cwd=tmp_path, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git not usable here")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True).stdout.strip()
    monkeypatch.chdir(tmp_path)
    assert mf.build_manifest(seed=0, data_files={}, model_source=MODEL)["git_commit"] == head


def test_missing_data_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist") as err:
        mf.build_manifest(seed=0, data_files={"train": tmp_path / "nope.jsonl"}, model_source=MODEL)
    assert err.value.source == str(tmp_path / "nope.jsonl")


def test_extra_cannot_overwrite_builtin_keys(data):
    with pytest.raises(ValueError, match="seed"):
        mf.build_manifest(seed=0, data_files=data, model_source=MODEL, extra={"seed": 1})
