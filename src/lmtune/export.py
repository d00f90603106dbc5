"""``lmtune export RUN [--merge] --out DIR``: the trained artefact as others load it.

Without ``--merge`` the adapter is copied as saved (``peft.PeftModel.from_pretrained(base, DIR)``
loads it). With ``--merge`` the adapter is folded into the base weights and a plain transformers
model is written (safetensors), which loads with ``AutoModelFor*.from_pretrained(DIR)`` and needs
neither peft nor the base model. Its dtype is ``dtype``: by default (``auto``) the one the base
model's config names, so a bf16 base model exports as bf16, not as the fp32 lmtune trains in.

Files get the modes of ordinary files (``0o666`` less the umask, directories ``0o777`` less the
umask): safetensors writes its files owner-only, which would hide the export from other users.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lmtune import models, outputs
from lmtune.assets import resolve_model
from lmtune.errors import UserError
from lmtune.kinds.tasks import find as find_task
from lmtune.methods import registry
from lmtune.run_dir import RunDir, read_model_info, write_model_info

#: ``dtype`` choices of a merged export, and the torch dtype each writes (``auto``: the base model's).
DTYPES: dict[str, str | None] = {"auto": None, "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def export(run_dir: Path, out: Path, merge: bool = False, dtype: str = "auto") -> Path:
    """Write the run's final model to ``out`` (atomically) and return ``out``.

    Args:
        run_dir: a finished run directory.
        out: the directory to write; must not exist or be empty.
        merge: fold the adapter into the base weights and write a plain transformers model.
        dtype: the merged weights' dtype: ``auto`` (the base model's config ``dtype``, else the
            training precision's, else fp32), ``fp32``, ``bf16`` or ``fp16``. An adapter export
            (no ``merge``) is copied as saved, whatever ``dtype`` says.

    Raises:
        UserError: ``run_dir`` is not a finished run, ``dtype`` is unknown, or ``out`` is a file, not
            empty, or not writable (all checked before anything is read or written).
    """
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}", source="--dtype")
    run = RunDir(run_dir)
    final = run.final
    if not run.final_info.is_file():
        raise UserError("no final/lmtune.json: not a finished lmtune run directory (train it first, or "
                        "give the run directory itself)", source=str(run_dir))
    out = Path(out)
    outputs.check_dir_target(out)
    if out.exists() and any(out.iterdir()):
        raise UserError("output directory is not empty; choose a new --out", source=str(out))
    try:
        info = run.read_final_info()
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable final/lmtune.json ({exc}); train the run again", source=str(run_dir)) from None
    dest = out.absolute()  # "." has no name to put a sibling .tmp beside
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # The parents of out that do not exist yet are created below; a failed export removes them again.
    with outputs.removed_on_failure(outputs.first_missing(dest.parent)):
        try:
            _write(final, info, tmp, _torch_dtype(run.path, info, dtype) if merge else None)
            _share(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    return out


def _write(final: Path, info: dict, tmp: Path, dtype) -> None:
    """The export's files, in ``tmp``: the adapter as saved (``dtype`` None), or the merged model in ``dtype``."""
    if dtype is None:
        shutil.copytree(final, tmp)
        return
    model, tokenizer = load_final(final, info)
    # Merge in fp32 (as loaded), then cast: rounding once, after the sum, loses the least.
    merged = _merge(model, info["method"]).to(dtype)
    merged.config.dtype = dtype  # what from_pretrained(dtype="auto") loads it as
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    write_model_info(tmp, {**info, "method": "full", "merged_from": info["method"]})


def _torch_dtype(run_dir: Path, info: dict, choice: str):
    """The torch dtype a merged export writes: ``choice``, or for ``auto`` the base model's.

    ``auto`` reads the base model's ``config.json`` (``dtype``, or ``torch_dtype`` in older
    files); when it names none, the recipe's ``training.precision`` if that was bf16 or fp16,
    else fp32, the dtype lmtune trains the weights in.
    """
    import torch

    name = DTYPES[choice] or _config_dtype(info)
    if name is None:
        precision = _recipe_precision(RunDir(run_dir))
        name = DTYPES.get(precision) if precision in ("bf16", "fp16") else "float32"
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def _config_dtype(info: dict) -> str | None:
    """The dtype the base model's ``config.json`` names, or None (no local config, or none named)."""
    for where in ((info.get("base_model_source") or {}).get("path"), info.get("base_model")):
        if not where:
            continue
        try:
            # The path recorded at training time first: resolving the reference may fetch.
            path = Path(where) if Path(where, "config.json").is_file() else Path(resolve_model(where).path)
            config = json.loads((path / "config.json").read_text())
        except (OSError, ValueError, UserError):
            continue  # a hub id not in the cache, or a moved model: fall back, do not fail the export
        return config.get("dtype") or config.get("torch_dtype")
    return None


def _recipe_precision(run: RunDir) -> str | None:
    """``training.precision`` of the run's ``recipe.yaml``, or None."""
    import yaml

    try:
        return (run.read_recipe().get("training") or {}).get("precision")
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def _share(directory: Path) -> None:
    """Give ``directory`` and everything in it the modes of ordinary new files (umask applied).

    safetensors writes owner-only files (0o600), and an adapter export copies those modes.
    """
    umask = os.umask(0)  # the only portable way to read it; restored at once
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.rglob("*"):
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def load_final(final: Path, info: dict | None = None):
    """The fine-tuned model of a run (base model + saved artefact) and its tokenizer."""
    info = info or read_model_info(final)
    task = info.get("task", {})
    method = registry.get(info["method"])
    if info.get("head"):
        n = 1 if getattr(find_task(task.get("type")), "numeric", False) else len(task.get("labels") or [])
        base, _, _ = models.load_sequence_classifier(info["base_model"], n)
    else:
        base, _, _ = models.load_causal_lm(info["base_model"])
    model = method.load(base, Path(final))
    from transformers import AutoTokenizer

    return model, AutoTokenizer.from_pretrained(final)  # saved with the run: its chat template included


def _merge(model, method: str):
    if not hasattr(model, "peft_config"):
        if registry.get(method).full_weights:
            return model
        raise UserError(f"a {method} model cannot be merged into the base weights (its adapters are "
                        "non-linear); export without --merge and load it with lmtune", source="--merge")
    try:
        return model.merge_and_unload()
    except (AttributeError, NotImplementedError, ValueError) as exc:
        raise UserError(f"{method} cannot be merged into the base weights ({exc}); export without --merge",
                        source="--merge") from None
