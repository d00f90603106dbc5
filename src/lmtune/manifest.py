"""Reproducibility record of a run: what ran, on what, with which data and model.

``manifest.json`` answers "can I get this number again?": library versions, hardware, seed,
the exact bytes of every data file (sha256), where the model came from, the git commit and
the command line. It is written atomically so a crashed run never leaves half a manifest.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from lmtune.errors import UserError
from lmtune.run_dir import RunDir

SCHEMA_VERSION = 1

# Distributions whose versions change results; "datasets" is listed only when installed.
_TRACKED = ("torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers",
            "scikit-learn", "rouge-score", "sacrebleu", "numpy", "pydantic", "gguf")
_OPTIONAL = ("datasets",)


def build_manifest(*, seed: int, data_files: dict[str, str | Path], model_source: dict,
                   extra: dict | None = None) -> dict:
    """Collect the reproducibility record of a run.

    Args:
        seed: the run's random seed.
        data_files: name (e.g. ``train``) -> path of each data file the run read or wrote;
            each is hashed. A directory is hashed over all its files.
        model_source: where the model came from, e.g. ``ModelSource.to_dict()``.
        extra: more top-level keys (recipe hash, method, ...); they may not replace the
            built-in ones.

    Returns:
        A JSON-serialisable dict.

    Raises:
        UserError: a data file does not exist.
        ValueError: ``extra`` reuses a built-in key (a programming error).
    """
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "lmtune_version": _lmtune_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": list(sys.argv),
        "seed": seed,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "device": _device_info(),
        "packages": _package_versions(),
        "git_commit": _git_commit(),
        "data": {name: _file_record(Path(path), name) for name, path in data_files.items()},
        "model": dict(model_source),
    }
    clash = sorted(set(extra or {}) & set(manifest))
    if clash:
        raise ValueError(f"extra keys {clash} would overwrite built-in manifest keys")
    manifest.update(extra or {})
    return manifest


def write_manifest(run_dir: Path, *, seed: int, data_files: dict[str, str | Path],
                   model_source: dict, extra: dict | None = None) -> dict:
    """Build the manifest and write it to ``run_dir/manifest.json`` atomically.

    Args:
        run_dir: the run directory (created if missing).
        seed, data_files, model_source, extra: as for ``build_manifest``.

    Returns:
        The manifest that was written.
    """
    manifest = build_manifest(seed=seed, data_files=data_files, model_source=model_source,
                              extra=extra)
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_manifest(manifest)
    return manifest


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks so large files need no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_record(path: Path, name: str) -> dict:
    if path.is_file():
        return {"path": str(path.resolve()), "sha256": sha256_file(path),
                "bytes": path.stat().st_size}
    if path.is_dir():
        # Hash relative names with contents, so renames and moves between files both show.
        digest, total = hashlib.sha256(), 0
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
            total += file.stat().st_size
        return {"path": str(path.resolve()), "sha256": digest.hexdigest(), "bytes": total}
    raise UserError(f"data file {name!r} does not exist, so the run cannot be recorded; check "
                    "the path", source=str(path))


def _lmtune_version() -> str:
    # Running from a source checkout (PYTHONPATH=src) has no installed distribution.
    try:
        from lmtune import __version__
    except ImportError:
        __version__ = None
    return _version("lmtune") or __version__ or "0+unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _package_versions() -> dict[str, str | None]:
    versions = {name: _version(name) for name in _TRACKED}
    versions.update({name: v for name in _OPTIONAL if (v := _version(name))})
    return versions


def _device_info() -> dict:
    try:
        import torch
    except ImportError:
        return {"torch": None}
    info = {"cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda,
            "device_count": 0, "device_name": None}
    if info["cuda_available"]:
        info["device_count"] = torch.cuda.device_count()
        info["device_name"] = torch.cuda.get_device_name(0)
    return info


def _git_commit(cwd: Path | None = None) -> str | None:
    """HEAD of the git repo around ``cwd`` (default: the working directory), else None."""
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git binary, hung filesystem, ...
        return None
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and commit else None
