"""The whole lifecycle for one recipe, as a fixed sequence of stages (like a torchtune recipe):

check -> claim the run directory -> set up -> baselines -> fine-tune -> evaluate -> save and report.
Where each file of the run goes is :class:`~lmtune.run_dir.RunDir`'s to say. The stages that need no
training (:func:`checked`, :func:`set_up`, :func:`baselines`, :func:`evaluate_tuned`, :func:`save_results`)
are public: ``lmtune eval`` (:mod:`lmtune.evaluation_run`) runs them on a model it did not train.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune import distributed, manifest, outputs, precision, resume_check, reward_task, run_status, tasks
from lmtune.data import prepare as data_stage
from lmtune.data.sample import fingerprint, sample_examples
from lmtune.data.templates import check as check_template
from lmtune.data.templates import resolve as resolve_template
from lmtune.evaluate import cost, intervals, sharding, systems
from lmtune.evaluate import forgetting as forgetting_probe
from lmtune.kinds import systems as system_kinds
from lmtune.lifecycle import calibrating, grading, probes, self_training
from lmtune.lifecycle.final_model import save_final
from lmtune.methods import registry
from lmtune.methods.merge import merged_adapter
from lmtune.models import pad_id
from lmtune.progress import say
from lmtune.recipe import Recipe
from lmtune.report.page import write_report
from lmtune.run_dir import RunDir
from lmtune.seeding import seed_everything
from lmtune.train import loop, strategy
from lmtune.train.trackers.session import opened as opened_trackers
from lmtune.training_settings import loop_settings


def run_recipe(recipe: Recipe, out: Path | None = None, resume: bool = False, overwrite: bool = False,
               quiet: bool = False, allow_eval_changes: bool = False, evaluate_on: str = "test",
               on_validation: Callable[[int, float], None] | None = None) -> Path:
    """Run every stage of ``recipe`` and return the run directory.

    Everything that can be checked (output location, data, template, probe files, model) is checked
    before the run directory is claimed; a run that fails after that but before training starts
    removes the directories it created, so a rerun is not blocked by a stub.

    Args:
        recipe: a validated recipe.
        out: run directory (default ``runs/<name>``).
        resume: continue from the newest checkpoint in ``out``.
        overwrite: replace an existing run directory (only an lmtune run: see :mod:`lmtune.outputs`).
        quiet: no progress bars or stage headings.
        allow_eval_changes: with ``resume``, accept a recipe whose ``eval.*`` keys differ from the run's
            (see :mod:`lmtune.resume_check`); any other difference is always refused.
        evaluate_on: the split the systems are scored on: ``test``, or ``validation`` for a trial of ``lmtune
            tune`` (the test split is then never scored; ``eval.json`` records which split was).
        on_validation: called with (step, validation loss) during training; an exception it raises stops the run.
    """
    # First, before any model or method code: the same recipe and seed start from the same weights.
    seed_everything(recipe.seed)
    main = distributed.init().main  # several processes (torchrun): each one runs every stage, one writes
    run = checked(recipe, RunDir.at(out, recipe.name), resume, overwrite, quiet, allow_eval_changes)
    run.split, run.on_validation = evaluate_on, on_validation
    distributed.barrier()  # every process has checked the run directory before the main one claims it
    created = outputs.claim_run_dir(run.run_dir.path, resume, overwrite) if main else None
    distributed.barrier()
    tracked = opened_trackers(recipe.tracking, run.run_dir, recipe.model_dump(mode="json"), resume, main, quiet)
    with run_status.kept(run.run_dir, main), tracked as run.trackers:
        # Until its first result is saved, a run that fails leaves nothing behind; from then on the directory
        # holds work worth keeping (each baseline is saved as it finishes) and --resume continues it.
        with outputs.removed_on_failure(created, keep=run.run_dir.eval):
            set_up(run)
            baselines(run)
            if not run.fine_tunes:
                return _baselines_only(run)
            _apply_method(run)
        summary = _fine_tune(run)
        evaluate_tuned(run)
        self_training.run_rounds(run)
        return _save_and_report(run, summary)


@dataclass
class _Run:
    """What the stages of one run share."""

    recipe: Recipe
    run_dir: RunDir
    resume: bool
    quiet: bool
    task: Any  # the task's shape (tasks.TokenTask, HeadTask or PreferenceTask)
    method: Any
    prepared: Any
    template: Any
    probes: list
    remeasure: bool = False  # eval.* changed on resume: what was measured before is measured again
    trackers: Any = None  # tracking:'s trackers (train.trackers.session.Trackers), open from the claim to the report
    split: str = "test"  # the split the systems are scored on (validation in a trial of `lmtune tune`)
    on_validation: Any = None  # called with (step, validation loss) during training (loop.Settings.on_validation)
    dtype: Any = None  # the torch dtype the weights load in (model.dtype resolved: precision.for_run)
    precision: str = "fp32"  # what training and evaluation compute in (training.precision, matched to dtype)
    model: Any = None
    tokenizer: Any = None
    source: Any = None
    load_kwargs: dict[str, Any] = field(default_factory=dict)  # the method's from_pretrained arguments
    encoder: Any = None
    encoded: dict[str, list] = field(default_factory=dict)
    spec: Any = None
    test: list = field(default_factory=list)
    test_encoded: list = field(default_factory=list)
    pad: int = 0
    n_task: int = 0
    results: dict[str, Any] = field(default_factory=dict)
    bias: dict[str, Any] = field(default_factory=dict)
    forgetting: dict[str, Any] = field(default_factory=dict)
    self_training: dict[str, Any] = field(default_factory=dict)  # training.self_training's rounds and gain
    graders: Any = None  # eval.graders built ({name: Grader}) at the first system graded (lifecycle.grading)

    @property
    def fine_tunes(self) -> bool:
        """Whether ``eval.systems`` has a fine-tuned system; without one nothing is trained."""
        return bool(self.tuned_systems)

    @property
    def tuned_systems(self) -> list[str]:
        """The ``eval.systems`` that answer with the fine-tuned model."""
        return [s for s in self.recipe.eval.systems if system_kinds.is_trained(s)]


def checked(recipe: Recipe, run_dir: RunDir, resume: bool, overwrite: bool, quiet: bool,
             allow_eval_changes: bool = False) -> _Run:
    """Check everything a run needs, cheapest first, and load the model; nothing is written yet."""
    outputs.check_run_dir(run_dir.path, resume, overwrite)
    eval_changed = resume_check.check_resume(recipe, run_dir.path, allow_eval_changes) if resume else []
    task = tasks.task_for(recipe)
    method = registry.get(recipe.method.name)
    dtype, compute = precision.for_run(recipe.model.dtype, recipe.training.precision, method.full_weights)
    # A method this machine cannot run fails here (e.g. 4-bit weights without bitsandbytes).
    load_kwargs = {**method.load_kwargs(recipe.method.peft), "dtype": dtype}
    strategy.check(recipe.training.distributed, compute, batch_size=recipe.training.batch_size,
                   grad_accum=recipe.training.grad_accum, max_grad_norm=recipe.training.max_grad_norm)
    say(f"[1/5] data: reading {recipe.data.train}", quiet)
    prepared = data_stage.prepare(recipe.data, recipe.task.type, recipe.task.labels, recipe.seed, recipe.model.name)
    calibrating.check(recipe, prepared)
    reward_task.check(recipe, prepared)  # training.grpo's grader: each {{item.<field>}} in the training records
    grading.check(recipe, prepared)  # eval.graders: each {{item.<field>}} in the records, files, modules, judge
    self_training.check(recipe, prepared)  # the pool is read now: a wrong path stops the run before the model loads
    task.check_distill()  # training.distill's text, likewise
    template = None
    if task.prompted:  # a placeholder the records lack is reported before the model loads
        template = resolve_template(recipe.task.template, prepared.splits["train"][0].format)
        check_template(template, prepared.splits["train"][0], recipe.task.labels)
    # The probe files are read now too: a wrong path stops the run before the model loads.
    run = _Run(recipe, run_dir, resume, quiet, task, method, prepared, template, probes.forgetting_probes(recipe, task),
               remeasure=bool(eval_changed), dtype=dtype, precision=compute)
    say(f"[2/5] model: loading {recipe.model.name}" + ("" if dtype == precision.DTYPES["fp32"] else f" in "
        f"{precision.dtype_name(dtype)}") + (" with a new head" if isinstance(task, tasks.HeadTask) else ""), quiet)
    if compute != precision.resolve(recipe.training.precision):
        say(f"      training.precision: {compute} to match model.dtype {recipe.model.dtype}", quiet)
    run.load_kwargs = load_kwargs
    run.model, run.tokenizer, run.source = task.load(load_kwargs)
    loop.check(run.model, loop_settings(recipe))  # speed-ups the model cannot take stop the run before the baselines
    return run


def set_up(run: _Run) -> None:
    """Write the recipe and manifest, encode and write the data, read back what a resumed run measured."""
    recipe, run_dir, task = run.recipe, run.run_dir, run.task
    if distributed.world().main:
        run_dir.write_recipe(recipe.model_dump(mode="json"))
        manifest.write_manifest(run_dir.path, seed=recipe.seed, data_files=run.prepared.files,
                                model_source=run.source.to_dict())
    run.encoder = task.encoder(run.tokenizer)
    run.encoded = task.encode(run.prepared, run.tokenizer, run.encoder, run.template)
    _sample_test(run)
    if distributed.world().main:
        data_stage.write(run.prepared, run_dir.data.path)
    run.pad = pad_id(run.tokenizer)
    task.prepare_reference(run.model, run.encoded, run.pad)
    run.spec = systems.TaskSpec(recipe.task.type, recipe.task.labels, run.template, recipe.eval.max_new_tokens,
                                  recipe.eval.batch_size, run.precision,
                                  memory_gb=recipe.eval.memory_gb)
    run.n_task = len(run.encoded["train"])
    if recipe.training.distill is not None:  # its text was read before the model loaded (task.check_distill)
        say(f"      distill: {task.with_distill(run.encoded['train'], run.encoder)} general-text blocks", run.quiet)
    if recipe.training.replay is not None:  # read before any baseline runs: a wrong path stops the run at once
        run.encoded["train"] = task.with_replay(run.encoded["train"], run.encoder)
        say(f"      replay: {len(run.encoded['train']) - run.n_task} general-text blocks mixed into {run.n_task} "
            "examples", run.quiet)
    if run.resume and not run.remeasure:
        _load_previous(run)


def _sample_test(run: _Run) -> None:
    """``eval.max_examples`` of the evaluated split (``run.split``: test, or validation in a tuning trial), as
    ``eval.sample`` says; said on the console and in the data report."""
    split, how, n = run.split, run.recipe.eval.sample, run.recipe.eval.max_examples
    test = run.prepared.splits.get(split, [])
    kept, said = sample_examples(test, n, run.recipe.seed, how)
    run.test = [test[i] for i in kept]
    run.test_encoded = [run.encoded[split][i] for i in kept] if run.encoded.get(split) else []
    # Which examples were evaluated, whatever their order: `lmtune compare` warns when runs differ in it.
    run.prepared.report["test_sha256"] = fingerprint(ex.record for ex in run.test)
    if n is not None and n < len(test):
        run.prepared.report.setdefault("sampled", {})[f"{split} (eval.max_examples)"] = said
        say(f"      evaluated {split} examples: {said}", run.quiet)


def baselines(run: _Run) -> None:
    """Every system that needs no training, and the forgetting probes on the base model."""
    recipe, quiet = run.recipe, run.quiet
    train = run.prepared.splits["train"]
    say(f"[3/5] baselines on {len(run.test)} {run.split} examples: "
        f"{', '.join(s for s in recipe.eval.systems if s not in run.tuned_systems) or 'none'}", quiet)
    shots = systems.few_shot_examples(train, recipe.eval.few_shot_k, recipe.seed,
                                      recipe.task.labels) if _needs_shots(recipe) else []
    _check_fits(run, shots)
    for system in recipe.eval.systems:
        if system in run.tuned_systems or system in run.results or not run.test:
            continue
        result = _answer(run, system, shots, quiet)
        if result is None:
            say(f"      {system}: does not apply to this task ({type(run.task).__name__}: "
                f"{', '.join(system_kinds.for_shape(run.task.shape))}); skipped", quiet)
            continue
        _scored(run, system, result, shots)
        save_results(run)
    if run.probes and "base" not in run.forgetting:
        say(f"      forgetting probes on the base model: {', '.join(p.name for p in run.probes)}", quiet)
        run.forgetting["base"] = probes.measure(run)
        # Saved now, so a run interrupted in training resumes without measuring the base again.
        save_results(run)


def _check_fits(run: _Run, shots: list) -> None:
    """Label scoring's memory budget, checked for the longest prompts of the run before any system is scored."""
    if not run.task.prompted or not run.test:
        return
    prompted = run.recipe.eval.few_shot_selection == "random" and _needs_shots(run.recipe)
    systems.check_fits(run.model, run.encoder, run.spec, run.test, shots if prompted else None)


def _answer(run: _Run, system: str, shots, quiet: bool):
    """``system`` on the test split; with several processes each answers its share (``evaluate.sharding``)."""
    train = run.prepared.splits["train"]
    return sharding.answered(lambda test, encoded: run.task.run(system, run.model, run.tokenizer, run.encoder,
                                                                run.spec, test, encoded, shots, train, quiet),
                             run.spec, run.test, run.test_encoded)


def _needs_shots(recipe: Recipe) -> bool:
    """Whether a system of ``eval.systems`` puts solved training examples in its prompts."""
    return any(system_kinds.system_kind(s).shots for s in recipe.eval.systems)


def _apply_method(run: _Run) -> None:
    """The method's trainable parameters on the model (a failure here still removes a new run directory)."""
    say(f"[4/5] fine-tune: {run.recipe.method.name} on {len(run.encoded['train'])} examples", run.quiet)
    run.model = _adapted(run, run.model)


def _adapted(run: _Run, model):
    """``model`` with the method applied; adapters and new heads train in fp32 over a bf16/fp16 base."""
    model = run.method.apply(model, run.recipe.method.peft, run.recipe.method.freeze)
    if not run.method.full_weights:
        precision.upcast_trainable(model)
    return model


def _fine_tune(run: _Run) -> dict[str, Any]:
    """Train, save ``final/``, and return the training summary that ``eval.json`` records."""
    trainable, total = registry.count_parameters(run.model)
    say(f"      trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)", run.quiet)
    objective = run.task.distilled(run.task.objective(), run.pad, run.run_dir.checkpoints if run.resume else None)
    result = loop.train(run.model, run.encoded["train"], run.encoded.get("validation", []),
                        loop_settings(run.recipe, run.on_validation), run.run_dir.path, run.pad, resume=run.resume,
                        quiet=run.quiet, objective=objective, trackers=run.trackers)
    if result.weights is not None:  # trained sharded: evaluate and save an unsharded model with those weights
        run.model = _adapted(run, run.task.load(run.load_kwargs)[0])
        strategy.Replicated().load_weights(run.model, result.weights)
    if distributed.world().main:
        save_final(run.run_dir.final, run.model, run.tokenizer, run.method, run.recipe, run.source)
    distributed.barrier()
    return {"train_steps": result.steps, "train_seconds": round(result.seconds, 1),
            "train_tokens_per_s": round(result.tokens_per_s, 1), "best_val_loss": result.best_val_loss,
            "best_step": result.best_step, "stopped_early": result.stopped_early,
            "trainable_parameters": trainable, "total_parameters": total, "train_tokens": result.train_tokens,
            "replay_examples": len(run.encoded["train"]) - run.n_task, "processes": len(result.peak_memory_mb),
            "peak_memory_mb": result.peak_memory_mb, "memory_kind": result.memory_kind, "strategy": result.strategy,
            "model_dtype": precision.dtype_name(run.dtype), "precision": run.precision}


def evaluate_tuned(run: _Run) -> None:
    """The fine-tuned systems on the test split, and the forgetting probes on the fine-tuned model."""
    quiet = run.quiet
    tuned_systems = run.tuned_systems
    if tuned_systems and run.test:
        say(f"[5/5] evaluate the fine-tuned model on {len(run.test)} {run.split} examples: "
            f"{', '.join(tuned_systems)}", quiet)
        with merged_adapter(run.model):
            for system in tuned_systems:
                tuned = _answer(run, system, None, quiet)
                if tuned is not None:
                    _scored(run, system, tuned, None)
    if run.probes:
        say("      forgetting probes on the fine-tuned model", quiet)
        with merged_adapter(run.model):
            run.forgetting["finetuned"] = probes.measure(run)
        run.forgetting["change"] = forgetting_probe.compare(run.forgetting["base"], run.forgetting["finetuned"])


def _baselines_only(run: _Run) -> Path:
    """A run whose ``eval.systems`` has no fine-tuned system: the baselines' results and report, no training."""
    say("[4/5] no finetuned system in eval.systems: baselines only, nothing is trained (add finetuned to train)",
        run.quiet)
    return _save_and_report(run)


def _save_and_report(run: _Run, summary: dict[str, Any] | None = None) -> Path:
    """Every result, with the significance tests between the systems, then the report; returns the run directory."""
    if distributed.world().main:
        tested = intervals.significance(run.results, run.spec, run.recipe.eval, run.recipe.seed)
        save_results(run, summary, significance=tested)
        write_report(run.run_dir.path)
        if run.trackers is not None:  # the results with their intervals, the report and manifest as artifacts
            run.trackers.log_outcome()
    distributed.barrier()  # the others return once the run directory is complete
    return run.run_dir.path


def _scored(run: _Run, system: str, result, shots) -> None:
    """A system's answers measured: the load it ran under, calibration, intervals, graders and the bias check."""
    result.metrics["measured_at"] = cost.machine_load()  # the load its latency was measured under
    calibrating.apply(run, system, result, shots)
    run.results[system] = intervals.with_intervals(result, run.spec, run.recipe.eval, run.recipe.seed)
    grading.apply(run, system, result)
    probes.check_bias(run, system, result, shots)


def _load_previous(run: _Run) -> None:
    """What an interrupted run measured: its baselines (they do not change on resume), bias and forgetting."""
    previous = run.run_dir.read_eval() if run.run_dir.eval.exists() else {}
    run.results = {k: systems.SystemResult(v, run.run_dir.read_predictions(k))
                   for k, v in (previous.get("results") or {}).items() if not system_kinds.is_trained(k)}
    run.bias = previous.get("bias") or {}
    run.forgetting = previous.get("forgetting") or {}


def save_results(run: _Run, summary: dict[str, Any] | None = None, significance: list | None = None) -> None:
    """Each system's predictions, then ``eval.json`` with what has been measured so far (the main process)."""
    if not distributed.world().main:
        return
    recipe, prices = run.recipe, run.recipe.eval.cost.model_dump()
    body = {"task": recipe.task.type, "split": run.split, "n": len(run.test), "labels": recipe.task.labels,
            "primary_metric": grading.primary_metric(recipe),  # the task's metric, or eval.rank_by's grader
            "prices_per_1k_tokens": prices,
            "results": {k: {**m, **cost.per_query(m, prices)}
                        for k, m in ((k, v.metrics if hasattr(v, "metrics") else v) for k, v in run.results.items())}}
    if run.bias:
        body["bias"] = run.bias
    if run.forgetting:
        body["forgetting"] = run.forgetting
    if run.self_training:
        body["self_training"] = run.self_training
    if significance:
        body["significance"] = significance
    if summary:
        body["training"] = {**summary, **cost.training(summary["train_tokens"], summary["train_seconds"], prices)}
    for name, res in run.results.items():
        if getattr(res, "predictions", None):
            run.run_dir.write_predictions(name, res.predictions)
    run.run_dir.write_eval(body)
