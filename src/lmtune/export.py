"""``lmtune export RUN [--merge] --out DIR``: the trained artefact as others load it.

Without ``--merge`` the adapter is copied as saved (``peft.PeftModel.from_pretrained(base, DIR)``
loads it). With ``--merge`` the adapter is folded into the base weights and a plain transformers
model is written (safetensors), which loads with ``AutoModelFor*.from_pretrained(DIR)`` and needs
neither peft nor the base model. Its dtype is ``dtype``: by default (``auto``) the one the base
model's config names, so a bf16 base model exports as bf16, not as the fp32 lmtune trains in.

``format="gguf"`` writes the merged model as one llama.cpp file, ``model.gguf`` (weights in ``quant``:
``f16``, ``bf16`` or ``q8_0``), with the run's tokenizer and chat template; with ``adapter`` a LoRA run is
written unmerged instead, ``base.gguf`` and ``adapter.gguf`` (``llama-server -m base.gguf --lora
adapter.gguf``). ``format="ollama"`` adds a ``Modelfile`` beside ``model.gguf`` (``ollama create``).
See :mod:`lmtune.deploy.gguf`.

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
#: ``format`` choices: a transformers folder, one llama.cpp GGUF file, or that GGUF with an Ollama Modelfile.
FORMATS = ("hf", "gguf", "ollama")


def export(run_dir: Path, out: Path, merge: bool = False, dtype: str = "auto", format: str = "hf",
           quant: str | None = None, adapter: bool = False) -> Path:
    """Write the run's final model to ``out`` (atomically) and return ``out``.

    Args:
        run_dir: a finished run directory.
        out: the directory to write; must not exist or be empty.
        merge: fold the adapter into the base weights and write a plain transformers model.
        dtype: the merged weights' dtype: ``auto`` (the base model's config ``dtype``, else the
            training precision's, else fp32), ``fp32``, ``bf16`` or ``fp16``. An adapter export
            (no ``merge``) is copied as saved, whatever ``dtype`` says.
        format: ``hf`` (the above), ``gguf`` (``model.gguf``, merged) or ``ollama`` (``model.gguf`` and a
            ``Modelfile``).
        quant: the GGUF weights' type, ``f16`` (default), ``bf16`` or ``q8_0``; GGUF formats only.
        adapter: with ``gguf``, a LoRA run as ``base.gguf`` and ``adapter.gguf`` instead of one merged file.

    Raises:
        UserError: ``run_dir`` is not a finished run, an option is unknown or does not fit the format, the
            model cannot be written in the format, or ``out`` is a file, not empty, or not writable (all
            checked before anything is written; the architecture and method before the model is loaded).
    """
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}", source="--dtype")
    quant = _check_format(format, quant, adapter, merge, dtype)
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
    if format != "hf":
        _check_gguf(info, adapter, str(run_dir))
    dest = out.absolute()  # "." has no name to put a sibling .tmp beside
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    # The parents of out that do not exist yet are created below; a failed export removes them again.
    with outputs.removed_on_failure(outputs.first_missing(dest.parent)):
        try:
            if format == "hf":
                _write(final, info, tmp, _torch_dtype(run.path, info, dtype) if merge else None)
            else:
                tmp.mkdir()
                _write_gguf(run, info, tmp, quant, adapter, ollama=format == "ollama")
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


def _check_format(format: str, quant: str | None, adapter: bool, merge: bool, dtype: str) -> str | None:
    """The GGUF quantization to write (None for ``hf``), or a UserError for options that do not fit the format."""
    from lmtune.deploy.gguf import check_quant

    if format not in FORMATS:
        raise UserError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}", source="--format")
    if format == "hf":
        for flag, given in (("--quant", quant is not None), ("--adapter", adapter)):
            if given:
                raise UserError("applies to GGUF exports only; add --format gguf (or ollama)", source=flag)
        return None
    if adapter and (format == "ollama" or merge):
        raise UserError("--adapter writes the LoRA unmerged, for llama.cpp: use it with --format gguf and "
                        "without --merge", source="--adapter")
    if dtype != "auto":
        raise UserError("GGUF weights take --quant (f16, bf16, q8_0), not --dtype", source="--dtype")
    check_quant(quant or "f16")
    return quant or "f16"


def _check_gguf(info: dict, adapter: bool, source: str) -> None:
    """Refuse, before loading anything, a run that cannot be written as GGUF: a head, a method, an architecture."""
    from lmtune.deploy.gguf import architecture

    if info.get("head"):
        raise UserError("the model ends in a classification/regression head, not in next-token prediction, so it "
                        "cannot be one GGUF file for llama.cpp; use --format hf and serve it with lmtune",
                        source=source)
    method = info.get("method")
    if adapter and getattr(registry.get(method), "config_class", None) != "LoraConfig":
        raise UserError(f"llama.cpp loads LoRA adapters only, not {method}; export --format gguf without "
                        "--adapter (one merged model)", source="--adapter")
    config = _base_config(info)
    if config is not None:
        architecture((config.get("architectures") or [None])[0], source=str(info.get("base_model") or source))


def _write_gguf(run: RunDir, info: dict, tmp: Path, quant: str, adapter: bool, ollama: bool) -> None:
    """``model.gguf`` (merged), or ``base.gguf`` and ``adapter.gguf``; with ``ollama`` a ``Modelfile`` too."""
    from lmtune.deploy.gguf import write_model
    from lmtune.deploy.gguf_adapter import check_adapter, write_adapter

    model, tokenizer = load_final(run.final, info)
    if (info.get("task") or {}).get("chat_template") is False:
        tokenizer.chat_template = None  # trained on plain prompts: a template would not be what it learned
    name = run_name(run)
    if adapter:
        check_adapter(model, info["method"])
        write_adapter(model, tmp / "adapter.gguf", name)
        write_model(model.unload(), tokenizer, tmp / "base.gguf", quant, name)
        return
    write_model(_merged_for_gguf(model, info["method"]), tokenizer, tmp / "model.gguf", quant, name)
    if ollama:
        (tmp / "Modelfile").write_text(_modelfile(tokenizer, system_prompt(run, info)))


def _merged_for_gguf(model, method: str):
    """The model with its training folded into the base weights, or a UserError saying why that cannot be."""
    why = None
    if not (registry.get(method).full_weights or hasattr(model, "merge_and_unload")):
        why = "what it trained (virtual tokens, or modules beside the base) is not a change of the base weights"
    else:
        try:
            return _merge(model, method)
        except UserError as exc:
            why = exc.message.split(";")[0]
    raise UserError(f"a {method} model cannot be one GGUF file: {why}, and llama.cpp runs plain weights only; "
                    "use --format hf and serve it with lmtune", source="--format")


def _modelfile(tokenizer, system: str | None) -> str:
    from lmtune.deploy.gguf_tokenizer import adds_bos_eos, chat_template, stop_tokens
    from lmtune.deploy.ollama import modelfile

    adds_bos, _ = adds_bos_eos(tokenizer)
    return modelfile("./model.gguf", chat_template(tokenizer), stop_tokens(tokenizer), system=system,
                     bos_token="" if adds_bos else (tokenizer.bos_token or ""),
                     eos_token=tokenizer.eos_token or "")


def system_prompt(run: RunDir, info: dict) -> str | None:
    """The system message the run's prompt template puts first (inline ``{system: ...}`` or a library template's)."""
    from lmtune.data.templates import DEFAULTS, TEMPLATES

    task = info.get("task") or {}
    if "template" not in task:
        task = _recipe(run).get("task") or {}
    template = task.get("template")
    if template is None:  # the default template of the records' format; classification records have one
        template = DEFAULTS.get(task.get("type"))
    if isinstance(template, dict):
        return template.get("system") or None
    library = TEMPLATES.get(template) if isinstance(template, str) else None
    return library.system if library else None


def gguf_summary(out: Path, run_dir: Path, format: str, adapter: bool) -> list[str]:
    """What a GGUF export wrote (with sizes) and the commands that run it."""
    from lmtune.deploy.gguf import command

    lines = [f"wrote {path} ({_size(path.stat().st_size)})" for path in sorted(Path(out).iterdir()) if path.is_file()]
    lines.append(f"run it with llama.cpp: {command(Path(out), adapter)}")
    if format == "ollama":
        from lmtune.deploy.ollama import import_command

        lines.append(f"import it into Ollama: {import_command(Path(out), ollama_name(RunDir(run_dir)))}")
    return lines


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def ollama_name(run: RunDir) -> str:
    """The run's name as an Ollama model name (lowercase letters, digits, ``.``, ``-``, ``_``)."""
    import re

    name = re.sub(r"[^a-z0-9._-]+", "-", run_name(run).lower()).strip("-._")
    return name or "lmtune-model"


def run_name(run: RunDir) -> str:
    """The recipe's ``name``, else the run directory's."""
    return str(_recipe(run).get("name") or run.path.absolute().name)


def _recipe(run: RunDir) -> dict:
    """The run's ``recipe.yaml``, or ``{}`` when it is missing or unreadable (it only names things here)."""
    import yaml

    try:
        recipe = run.read_recipe()
    except (OSError, yaml.YAMLError):
        return {}
    return recipe if isinstance(recipe, dict) else {}


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
    config = _base_config(info)
    return (config.get("dtype") or config.get("torch_dtype")) if config is not None else None


def _base_config(info: dict) -> dict | None:
    """The base model's ``config.json``, or None (a hub id not in the cache, or a moved model)."""
    for where in ((info.get("base_model_source") or {}).get("path"), info.get("base_model")):
        if not where:
            continue
        try:
            # The path recorded at training time first: resolving the reference may fetch.
            path = Path(where) if Path(where, "config.json").is_file() else Path(resolve_model(where).path)
            return json.loads((path / "config.json").read_text())
        except (OSError, ValueError, UserError):
            continue  # fall back, do not fail the export
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
