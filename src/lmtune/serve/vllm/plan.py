"""Which runs one vLLM server can serve, and the command line that starts vLLM's OpenAI server for them.

vLLM serves one base model, with LoRA adapters on it (multi-LoRA: each request names an adapter,
and requests for different adapters share a batch). So the references given to ``lmtune serve
--engine vllm`` must be LoRA runs of one base (the base itself may be named too, and is served under
its own name either way), or one full fine-tune, served alone as a model of its own. Everything that
vLLM would refuse, or load as something else, is refused here, naming the run and why, before
anything is started: IA3, DoRA, prompt and prefix tuning, lmtune's bottleneck adapters, runs with a
classification or regression head, and adapters that also save whole modules or train biases
(vLLM's ``PEFTHelper`` refuses ``use_dora``, ``modules_to_save`` and adapter biases).

The command uses the flags of vLLM's ``vllm.entrypoints.openai.api_server`` (``vllm serve``):
``--lora-modules`` takes all adapters after one flag (a second flag would replace the first list),
as ``name=path``, or as JSON when a name or path holds ``=`` or ``,`` (which the short form cannot
carry); ``--max-lora-rank`` must be one of vLLM's allowed ranks (``VLLM_RANKS``), the smallest that
holds the largest adapter; ``--max-loras`` (adapters in one batch) defaults to 1 in vLLM, which would
serialise requests for different runs.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lmtune.assets import resolve_model
from lmtune.errors import UserError
from lmtune.methods import registry
from lmtune.run_dir import read_model_info, run_final, run_of

MODULE = "vllm.entrypoints.openai.api_server"
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's LoRAConfig.max_lora_rank choices
MAX_LORAS = 8  # adapters mixed in one batch; vLLM reserves GPU memory for max_loras x max_lora_rank
ONE_BASE = "vLLM serves one base model with many LoRA adapters"
LABELS = {"adapter": "bottleneck adapter", "ia3": "IA3", "prompt_tuning": "prompt tuning",
          "prefix_tuning": "prefix tuning"}


@dataclass(frozen=True)
class Adapter:
    """A LoRA run vLLM loads as an adapter: its served name, its ``final/`` directory and its rank."""

    name: str
    path: Path
    rank: int


@dataclass(frozen=True)
class VllmPlan:
    """What one vLLM server serves.

    Attributes:
        model: what vLLM loads (``--model``): a local model directory or a hub id.
        name: the name the model is served under (``--served-model-name``).
        adapters: the LoRA runs on it.
        bases: served name -> model reference that fine-tuning jobs on that name train (the base's own).
        notes: lines to say at start-up (runs served a little differently than lmtune serves them).
    """

    model: str
    name: str
    adapters: tuple[Adapter, ...] = ()
    bases: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def max_rank(self) -> int:
        """The smallest rank vLLM accepts for ``--max-lora-rank`` that holds every adapter."""
        largest = max((a.rank for a in self.adapters), default=1)
        return next(r for r in VLLM_RANKS if r >= largest)

    @property
    def model_map(self) -> dict[str, str]:
        """lmtune's served names -> vLLM's names for them (the same names: vLLM is told lmtune's)."""
        return {self.name: self.name, **{a.name: a.name for a in self.adapters}}

    def command(self, port: int, python: str = sys.executable) -> list[str]:
        """The argv that starts vLLM's OpenAI server on ``127.0.0.1:port`` (its API key goes in the environment)."""
        argv = [python, "-m", MODULE, "--model", self.model, "--served-model-name", self.name]
        if self.adapters:
            argv += ["--enable-lora", "--lora-modules", *[_lora_module(a, self.name) for a in self.adapters],
                     "--max-lora-rank", str(self.max_rank), "--max-loras", str(min(len(self.adapters), MAX_LORAS))]
        return argv + ["--host", "127.0.0.1", "--port", str(port)]


def vllm_command(runs: list[str], port: int, python: str = sys.executable) -> list[str]:
    """The vLLM command line serving ``runs`` (run directories and/or their base model) on ``port``.

    Raises:
        UserError: runs one vLLM server cannot serve together (see :func:`plan_vllm`).
    """
    return plan_vllm(runs).command(port, python)


def engine_problem(has_vllm: bool, has_cuda: bool) -> str | None:
    """Why ``--engine vllm`` cannot run on this machine, or None."""
    if not has_cuda:
        missing = " (and vLLM is not installed)" if not has_vllm else ""
        return f"vllm needs a CUDA GPU and this machine has none{missing}; use --engine lmtune (the default)"
    if not has_vllm:
        return "vLLM is not installed: pip install vllm (on the GPU machine), or use --engine lmtune (the default)"
    return None


def check_machine() -> None:
    """Refuse ``--engine vllm`` on a machine without vLLM or without a CUDA GPU, in one line.

    Raises:
        UserError: (source ``--engine``) what is missing.
    """
    import torch

    problem = engine_problem(importlib.util.find_spec("vllm") is not None, torch.cuda.is_available())
    if problem:
        raise UserError(problem, source="--engine")


def plan_vllm(refs: list[str]) -> VllmPlan:
    """What one vLLM server serves for ``refs``: LoRA runs of one base (and that base), or one full fine-tune.

    Raises:
        UserError: nothing to serve, a run vLLM cannot load as LoRA (naming it and why), a full
            fine-tune among other references, runs of different base models, or one name twice.
    """
    if not refs:
        raise UserError("give the runs (or the base model) to serve", source="--engine")
    bases: dict[str, list[str]] = {}  # base key -> what was given or trained on it
    adapters, notes, full = [], [], None
    for ref in refs:
        final = run_final(ref)
        if final is None:
            bases.setdefault(_key(ref), []).append(ref)
            continue
        info = _info(final)
        rank = _lora_rank(final, info)
        if rank is None:
            full = final
            continue
        adapters.append(Adapter(run_of(final).path.name, final.resolve(), rank))
        bases.setdefault(_key(info["base_model"]), []).append(str(final.parent))
        if info["method"] == "qlora":
            notes.append(f"{adapters[-1].name}: a QLoRA adapter, served on the base model's full-precision weights "
                         "(trained on 4-bit ones)")
    if full is not None:
        return _full_plan(full, refs)
    return _lora_plan(bases, adapters, tuple(notes))


def _full_plan(final: Path, refs: list[str]) -> VllmPlan:
    if len(refs) > 1:
        raise UserError(f"{ONE_BASE}: this full fine-tune is a model of its own, so serve it alone (one lmtune "
                        "serve --engine vllm for it), or serve LoRA runs of one base together",
                        source=str(final.parent))
    return VllmPlan(str(final.resolve()), run_of(final).path.name)


def _lora_plan(bases: dict[str, list[str]], adapters: list[Adapter], notes: tuple[str, ...]) -> VllmPlan:
    if len(bases) > 1:
        groups = "; ".join(f"{key}: {', '.join(Path(r).name for r in given)}" for key, given in bases.items())
        raise UserError(f"these runs have different base models ({groups}); {ONE_BASE}: start one lmtune serve "
                        "--engine vllm per base model", source="--engine")
    base_ref = next(iter(bases.values()))[0] if not adapters else _base_ref(adapters[0])
    name = _base_name(base_ref)
    seen = {name}
    for adapter in adapters:
        if adapter.name in seen:
            raise UserError(f"the name {adapter.name!r} is served twice; give each run its own directory name",
                            source=str(adapter.path.parent))
        seen.add(adapter.name)
    return VllmPlan(resolve_model(base_ref).path, name, tuple(adapters), {name: base_ref}, notes)


def _lora_rank(final: Path, info: dict) -> int | None:
    """The LoRA rank of a run vLLM can serve as an adapter; None for a full fine-tune (a model of its own).

    Raises:
        UserError: a run vLLM cannot serve, naming why and what serves it instead.
    """
    where, method = str(final.parent), info.get("method", "")
    lmtune = "serve it with --engine lmtune (the default)"
    if info.get("head"):
        raise UserError(f"this run trained a classification/regression head, which vLLM does not serve (it serves "
                        f"generative models and LoRA adapters); {lmtune}, or evaluate it with lmtune eval",
                        source=where)
    if registry.get(method).full_weights:
        return None
    merge = f"{lmtune}, or merge it (lmtune export RUN --merge --out DIR) and serve the merged model alone"
    try:
        config = json.loads((final / "adapter_config.json").read_text())
    except (OSError, ValueError):
        config = {}
    if config.get("peft_type") != "LORA":
        hint = merge if method == "ia3" else lmtune
        raise UserError(f"{LABELS.get(method, method)} runs cannot be served by vLLM, which loads LoRA adapters "
                        f"only; {hint}",
                        source=where)
    if config.get("use_dora"):
        raise UserError(f"DoRA runs cannot be served by vLLM, which does not load DoRA adapters; {merge}",
                        source=where)
    if config.get("modules_to_save"):
        raise UserError(f"this adapter also saves whole modules ({', '.join(config['modules_to_save'])}), which "
                        f"vLLM does not load; {merge}", source=where)
    if config.get("bias", "none") != "none":
        raise UserError(f"this adapter trains biases (bias: {config['bias']}), which vLLM does not load; {merge}",
                        source=where)
    rank = max([int(config.get("r") or 0), *map(int, (config.get("rank_pattern") or {}).values())])
    if rank > VLLM_RANKS[-1]:
        raise UserError(f"LoRA rank {rank} is above the largest vLLM serves ({VLLM_RANKS[-1]}); {lmtune}",
                        source=where)
    return rank


def _info(final: Path) -> dict:
    try:
        return read_model_info(final)
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable final/lmtune.json ({exc}); train the run again",
                        source=str(final.parent)) from None


def _base_ref(adapter: Adapter) -> str:
    return read_model_info(adapter.path)["base_model"]


def _key(ref: str) -> str:
    """One key per base model: a local directory's resolved path, else the reference as given."""
    path = Path(ref).expanduser()
    return str(path.resolve()) if path.exists() else ref


def _base_name(ref: str) -> str:
    """The name the base is served under, as ``lmtune serve`` names it: an alias or hub id, a directory's name."""
    path = Path(ref).expanduser()
    return path.name if path.exists() else ref


def _lora_module(adapter: Adapter, base: str) -> str:
    """One ``--lora-modules`` value: ``name=path``, or vLLM's JSON form where ``=`` or ``,`` would break that."""
    text = f"{adapter.name}{adapter.path}"
    if "=" in text or "," in text:
        return json.dumps({"name": adapter.name, "path": str(adapter.path), "base_model_name": base})
    return f"{adapter.name}={adapter.path}"
