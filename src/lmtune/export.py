"""``lmtune export RUN [--merge] --out DIR``: the trained artefact as others load it.

Without ``--merge`` the adapter is copied as saved (``peft.PeftModel.from_pretrained(base, DIR)``
loads it). With ``--merge`` the adapter is folded into the base weights and a plain transformers
model is written (safetensors), which loads with ``AutoModelFor*.from_pretrained(DIR)`` and needs
neither peft nor the base model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lmtune import models, outputs
from lmtune.errors import UserError
from lmtune.methods import registry


def export(run_dir: Path, out: Path, merge: bool = False) -> Path:
    """Write the run's final model to ``out`` (atomically) and return ``out``.

    Raises:
        UserError: ``run_dir`` is not a finished run, or ``out`` is a file, not empty, or not writable
            (all checked before anything is read or written).
    """
    final = Path(run_dir) / "final"
    info_path = final / "lmtune.json"
    if not info_path.is_file():
        raise UserError("no final/lmtune.json: not a finished lmtune run directory (train it first, or "
                        "give the run directory itself)", source=str(run_dir))
    out = Path(out)
    outputs.check_dir_target(out)
    if out.exists() and any(out.iterdir()):
        raise UserError("output directory is not empty; choose a new --out", source=str(out))
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable final/lmtune.json ({exc}); train the run again", source=str(run_dir)) from None
    dest = out.absolute()  # "." has no name to put a sibling .tmp beside
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # The parents of out that do not exist yet are created below; a failed export removes them again.
    with outputs.removed_on_failure(outputs.first_missing(dest.parent)):
        try:
            _write(final, info, tmp, merge)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    return out


def _write(final: Path, info: dict, tmp: Path, merge: bool) -> None:
    """The export's files, in ``tmp``: the adapter as saved, or the merged model."""
    if not merge:
        shutil.copytree(final, tmp)
        return
    model, tokenizer = load_final(final, info)
    merged = _merge(model, info["method"])
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "lmtune.json").write_text(json.dumps({**info, "method": "full", "merged_from": info["method"]},
                                                indent=2))


def load_final(final: Path, info: dict | None = None):
    """The fine-tuned model of a run (base model + saved artefact) and its tokenizer."""
    info = info or json.loads((Path(final) / "lmtune.json").read_text())
    task = info.get("task", {})
    method = registry.get(info["method"])
    if info.get("head"):
        n = 1 if task.get("type") == "regression" else len(task.get("labels") or [])
        base, _, _ = models.load_sequence_classifier(info["base_model"], n)
    else:
        base, _, _ = models.load_causal_lm(info["base_model"])
    model = method.load(base, Path(final))
    from transformers import AutoTokenizer

    return model, AutoTokenizer.from_pretrained(final)  # saved with the run: its chat template included


def _merge(model, method: str):
    if not hasattr(model, "peft_config"):
        if method == "full":
            return model
        raise UserError(f"a {method} model cannot be merged into the base weights (its adapters are "
                        "non-linear); export without --merge and load it with lmtune", source="--merge")
    try:
        return model.merge_and_unload()
    except (AttributeError, NotImplementedError, ValueError) as exc:
        raise UserError(f"{method} cannot be merged into the base weights ({exc}); export without --merge",
                        source="--merge") from None
