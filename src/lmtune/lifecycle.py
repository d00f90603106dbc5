"""The whole lifecycle for one recipe, as a fixed sequence of stages (like a torchtune recipe):

data -> model -> baselines -> fine-tune -> evaluate -> report.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from lmtune import atomic, manifest, precision, tasks
from lmtune.data import prepare as data_stage
from lmtune.data.templates import check as check_template, resolve as resolve_template
from lmtune.errors import UserError
from lmtune.evaluate import baselines, bootstrap, cost, metrics
from lmtune.evaluate import forgetting as forgetting_probe
from lmtune.evaluate.report import write_report
from lmtune.methods import registry
from lmtune.models import pad_id
from lmtune.recipe import Recipe
from lmtune.train import loop


def say(message: str, quiet: bool = False) -> None:
    """A stage heading on stderr (stdout stays for results)."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def run_recipe(recipe: Recipe, out: Path | None = None, resume: bool = False, overwrite: bool = False,
               quiet: bool = False) -> Path:
    """Run every stage of ``recipe`` and return the run directory.

    Args:
        recipe: a validated recipe.
        out: run directory (default ``runs/<name>``).
        resume: continue from the newest checkpoint in ``out``.
        overwrite: replace an existing run directory instead of refusing.
        quiet: no progress bars or stage headings.
    """
    run_dir = Path(out) if out else Path("runs") / recipe.name
    kind = tasks.task_for(recipe)
    method = registry.get(recipe.method.name)
    # Bad data, a missing model or a method this machine cannot run fail here, before anything is written.
    load_kwargs = method.load_kwargs(recipe.method.peft)
    say(f"[1/5] data: reading {recipe.data.train}", quiet)
    prepared = data_stage.prepare(recipe.data, recipe.task.type, recipe.task.labels, recipe.seed, recipe.model)
    say(f"[2/5] model: loading {recipe.model}" + (" with a new head" if isinstance(kind, tasks.HeadTask) else ""),
        quiet)
    model, tokenizer, source = kind.load(load_kwargs)

    _claim_run_dir(run_dir, resume, overwrite)
    atomic.write_text(run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    manifest.write_manifest(run_dir, seed=recipe.seed, data_files=prepared.files, model_source=source.to_dict())
    encoder = kind.encoder(tokenizer)
    template = None
    if kind.prompted:
        template = resolve_template(recipe.task.template, prepared.splits["train"][0].format)
        check_template(template, prepared.splits["train"][0], recipe.task.labels)
    encoded = kind.encode(prepared, tokenizer, encoder, template)
    data_stage.write(prepared, run_dir / "data")
    pad = pad_id(tokenizer)
    kind.prepare_reference(model, encoded, pad)

    test = prepared.splits.get("test", [])[: recipe.eval.max_examples]
    test_encoded = encoded.get("test", [])[: recipe.eval.max_examples]
    spec = baselines.TaskSpec(recipe.task.type, recipe.task.labels, template, recipe.eval.max_new_tokens,
                              recipe.eval.batch_size, precision.resolve(recipe.training.precision))
    # The probe and replay files are read before any baseline runs: a wrong path stops the run at once.
    probes, forgetting = _forgetting_probes(recipe, kind), _load_previous(run_dir, "forgetting") if resume else {}
    n_task = len(encoded["train"])
    if recipe.training.replay is not None:
        encoded["train"] = kind.with_replay(encoded["train"], encoder)
        say(f"      replay: {len(encoded['train']) - n_task} general-text blocks mixed into {n_task} examples", quiet)
    results = _load_previous_results(run_dir) if resume else {}
    bias_reports: dict[str, Any] = _load_previous(run_dir, "bias") if resume else {}
    say(f"[3/5] baselines on {len(test)} test examples: "
        f"{', '.join(s for s in recipe.eval.systems if not s.startswith('finetuned')) or 'none'}", quiet)
    shots = baselines.few_shot_examples(prepared.splits["train"], recipe.eval.few_shot_k, recipe.seed,
                                        recipe.task.labels) if "few_shot" in recipe.eval.systems else []
    for system in recipe.eval.systems:
        if system.startswith("finetuned") or system in results or not test:
            continue
        result = kind.run(system, model, tokenizer, encoder, spec, test, test_encoded, shots,
                          prepared.splits["train"], quiet)
        if result is None:
            say(f"      {system}: does not apply to this task ({type(kind).__name__}: "
                f"{', '.join(kind.systems)}); skipped", quiet)
            continue
        results[system] = _with_intervals(result, spec, recipe)
        _check_bias(kind, system, result, bias_reports, model, tokenizer, encoder, spec, test, shots,
                    prepared.splits["train"], quiet)
        _save_results(run_dir, recipe, spec, results, len(test), bias=bias_reports, forgetting=forgetting)

    if probes and "base" not in forgetting:
        say(f"      forgetting probes on the base model: {', '.join(p.name for p in probes)}", quiet)
        forgetting["base"] = _measure(model, tokenizer, probes, recipe, spec, quiet)
        # Saved now, so a run interrupted in training resumes without measuring the base again.
        _save_results(run_dir, recipe, spec, results, len(test), bias=bias_reports, forgetting=forgetting)

    say(f"[4/5] fine-tune: {recipe.method.name} on {len(encoded['train'])} examples", quiet)
    model = method.apply(model, recipe.method.peft, recipe.method.freeze)
    trainable, total = registry.count_parameters(model)
    say(f"      trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)", quiet)
    result = loop.train(model, encoded["train"], encoded.get("validation", []), _settings(recipe), run_dir,
                        pad, resume=resume, quiet=quiet, objective=kind.objective())
    save_final(run_dir / "final", model, tokenizer, method, recipe, source)

    tuned_systems = [s for s in recipe.eval.systems if s.startswith("finetuned")]
    if tuned_systems and test:
        say(f"[5/5] evaluate the fine-tuned model: {', '.join(tuned_systems)}", quiet)
        with merged_adapter(model):
            for system in tuned_systems:
                tuned = kind.run(system, model, tokenizer, encoder, spec, test, test_encoded, None,
                                 prepared.splits["train"], quiet)
                if tuned is not None:
                    results[system] = _with_intervals(tuned, spec, recipe)
                    _check_bias(kind, system, tuned, bias_reports, model, tokenizer, encoder, spec, test, None,
                                prepared.splits["train"], quiet)
    if probes:
        say("      forgetting probes on the fine-tuned model", quiet)
        with merged_adapter(model):
            forgetting["finetuned"] = _measure(model, tokenizer, probes, recipe, spec, quiet)
        forgetting["change"] = forgetting_probe.compare(forgetting["base"], forgetting["finetuned"])
    summary = {"train_steps": result.steps, "train_seconds": round(result.seconds, 1),
               "train_tokens_per_s": round(result.tokens_per_s, 1), "best_val_loss": result.best_val_loss,
               "best_step": result.best_step, "stopped_early": result.stopped_early,
               "trainable_parameters": trainable, "total_parameters": total, "train_tokens": result.train_tokens,
               "replay_examples": len(encoded["train"]) - n_task}
    _save_results(run_dir, recipe, spec, results, len(test), summary, bias=bias_reports, forgetting=forgetting,
                  significance=_significance(results, spec, recipe))
    write_report(run_dir)
    return run_dir


@contextlib.contextmanager
def merged_adapter(model):
    """Evaluate a LoRA-style adapter merged into the base weights (as it is served after export --merge).

    Unmerged, every adapted layer runs two extra matrix products: 1.7x the latency here.
    The saved adapter in final/ is written before this and is not affected.
    """
    merge = getattr(model, "merge_adapter", None)
    if merge is None:
        yield
        return
    try:
        merge()
    except (ValueError, NotImplementedError, AttributeError):  # methods with nothing to merge
        yield
        return
    try:
        yield
    finally:
        model.unmerge_adapter()


def save_final(final: Path, model, tokenizer, method, recipe: Recipe, source) -> None:
    """Write the trained artefact, tokenizer (with its chat template) and how to use it, atomically."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    method.save(model, tmp)
    tokenizer.save_pretrained(tmp)
    info = {"base_model": recipe.model, "base_model_source": source.to_dict(), "method": recipe.method.name,
            "task": recipe.task.model_dump(mode="json"), "head": tasks.uses_head(recipe),
            "max_length": recipe.training.max_length}
    (tmp / "lmtune.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def _settings(recipe: Recipe) -> loop.Settings:
    t = recipe.training
    es = t.early_stopping
    return loop.Settings(learning_rate=t.learning_rate, batch_size=t.batch_size, grad_accum=t.grad_accum,
                         epochs=t.epochs, max_steps=t.max_steps, weight_decay=t.weight_decay,
                         warmup_ratio=t.warmup_ratio, scheduler=t.scheduler, max_grad_norm=t.max_grad_norm,
                         eval_every=t.eval_every, save_every=t.save_every, keep_checkpoints=t.keep_checkpoints,
                         patience=es.patience if es else None, min_delta=es.min_delta if es else 0.0,
                         log_every=t.log_every, seed=recipe.seed, precision=t.precision,
                         group_by_length=t.group_by_length, packing=t.packing, max_length=t.max_length,
                         gradient_checkpointing=t.gradient_checkpointing, compile=t.compile)


def _claim_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to silently clobber a previous run: training results are never lost by accident."""
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        if not overwrite:
            raise UserError("run directory already exists; pass --resume to continue it, --overwrite to "
                            "replace it, or --out for a new one", source=str(run_dir))
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _check_bias(kind, system, result, reports, model, tokenizer, encoder, spec, test, shots, train, quiet) -> None:
    """``eval.bias``: the system again on term-swapped test inputs; its report goes into ``reports``."""
    if kind.recipe.eval.bias is None:
        return
    say(f"      bias check: {system} on term-swapped test inputs", quiet)
    found = kind.bias_check(system, result, model, tokenizer, encoder, spec, test, shots, train)
    if found is not None:
        reports[system] = found


def _with_intervals(result, spec, recipe: Recipe):
    """Add a bootstrap 95% interval to every metric computed from the system's predictions.

    Perplexity has no per-example predictions: its interval resamples the batches of text blocks.
    """
    rows = result.predictions
    if recipe.eval.bootstrap and result.nll_units:
        nll, tokens = zip(*result.nll_units)
        interval = bootstrap.perplexity_interval(nll, tokens, n_resamples=recipe.eval.bootstrap, seed=recipe.seed)
        if interval["ci_low"] is not None:
            result.metrics["ci"] = {"perplexity": [interval["ci_low"], interval["ci_high"]]}
        return result
    if not recipe.eval.bootstrap or not rows or spec.type in ("language_modeling", "preference"):
        return result
    chosen = None if recipe.eval.metrics == "auto" else recipe.eval.metrics
    intervals = bootstrap.confidence_intervals(spec.type, [r["reference"] for r in rows],
                                               [r["prediction"] for r in rows], spec.labels, metrics=chosen,
                                               n_resamples=recipe.eval.bootstrap, seed=recipe.seed)
    # Metrics named in eval.metrics are reported even where the task's defaults leave them out.
    result.metrics.update({k: v["value"] for k, v in intervals.items() if k not in result.metrics})
    result.metrics["ci"] = {k: [v["ci_low"], v["ci_high"]] for k, v in intervals.items()
                            if v.get("ci_low") is not None}
    return result


def _significance(results: dict[str, Any], spec, recipe: Recipe) -> list[dict[str, Any]]:
    """Paired bootstrap p-values of the winner on the task metric against every other system."""
    metric = metrics.PRIMARY_METRIC.get(spec.type)
    scored = {k: v for k, v in results.items() if getattr(v, "predictions", None)
              and isinstance(v.metrics.get(metric), (int, float))}
    if not recipe.eval.bootstrap or len(scored) < 2:
        return []
    winner = metrics.best_systems({k: v.metrics[metric] for k, v in scored.items()}, metric)[0]
    refs = [r["reference"] for r in scored[winner].predictions]
    out = []
    for other, res in scored.items():
        if other == winner or len(res.predictions) != len(refs):
            continue
        p = bootstrap.paired_p_value(spec.type, metric, refs, [r["prediction"] for r in scored[winner].predictions],
                                     [r["prediction"] for r in res.predictions], spec.labels,
                                     n_resamples=recipe.eval.bootstrap, seed=recipe.seed)
        out.append({"a": winner, "b": other, "metric": metric, "p_value": p})
    return out


def _forgetting_probes(recipe: Recipe, kind) -> list:
    config = recipe.eval.forgetting
    if config is None:
        return []
    if not kind.prompted:
        raise UserError("the forgetting probes score a causal LM's text; a head model has none: remove "
                        "eval.forgetting", source="eval.forgetting")
    return forgetting_probe.load_probes(config.model_dump(), recipe.seed)


def _measure(model, tokenizer, probes, recipe: Recipe, spec, quiet: bool) -> dict[str, Any]:
    return forgetting_probe.measure(model, tokenizer, probes, recipe.eval.batch_size, spec.precision,
                                    recipe.training.max_length, quiet)


def _load_previous(run_dir: Path, key: str) -> dict[str, Any]:
    path = run_dir / "eval.json"
    return json.loads(path.read_text()).get(key) or {} if path.exists() else {}


def _save_results(run_dir: Path, recipe: Recipe, spec, results: dict[str, Any], n: int,
                  summary: dict[str, Any] | None = None, bias: dict[str, Any] | None = None,
                  forgetting: dict[str, Any] | None = None, significance: list | None = None) -> None:
    prices = recipe.eval.cost.model_dump()
    body = {"task": recipe.task.type, "n": n, "labels": recipe.task.labels,
            "primary_metric": metrics.PRIMARY_METRIC.get(recipe.task.type, "loss"),
            "prices_per_1k_tokens": prices,
            "results": {k: {**m, **cost.per_query(m, prices)}
                        for k, m in ((k, v.metrics if hasattr(v, "metrics") else v) for k, v in results.items())}}
    if bias:
        body["bias"] = bias
    if forgetting:
        body["forgetting"] = forgetting
    if significance:
        body["significance"] = significance
    if summary:
        body["training"] = {**summary, **cost.training(summary["train_tokens"], summary["train_seconds"], prices)}
    for name, res in results.items():
        if getattr(res, "predictions", None):
            atomic.write_jsonl(run_dir / "predictions" / f"{name}.jsonl", res.predictions)
    atomic.write_json(run_dir / "eval.json", body)


def _load_previous_results(run_dir: Path) -> dict[str, Any]:
    """Baseline results already measured by an interrupted run (they do not change on resume)."""
    previous = _load_previous(run_dir, "results")
    return {k: baselines.SystemResult(v, _read_predictions(run_dir, k)) for k, v in previous.items()
            if not k.startswith("finetuned")}


def _read_predictions(run_dir: Path, system: str) -> list[dict[str, Any]]:
    path = run_dir / "predictions" / f"{system}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
