"""The probes of a run beside its task metric: the counterfactual bias check (``eval.bias``) and the forgetting
probes (``eval.forgetting``), base model before training and fine-tuned model after."""

from __future__ import annotations

from typing import Any

from lmtune.errors import UserError
from lmtune.evaluate import forgetting as forgetting_probe
from lmtune.progress import say


def check_bias(run, system: str, result, shots) -> None:
    """``eval.bias``: the system again on term-swapped test inputs; its report goes into ``run.bias``."""
    if run.recipe.eval.bias is None:
        return
    say(f"      bias check: {system} on term-swapped test inputs", run.quiet)
    found = run.task.bias_check(system, result, run.model, run.tokenizer, run.encoder, run.spec, run.test, shots,
                                run.prepared.splits["train"])
    if found is not None:
        run.bias[system] = found


def forgetting_probes(recipe, task) -> list:
    """The probe files of ``eval.forgetting``, read now (a wrong path stops the run before the model loads)."""
    config = recipe.eval.forgetting
    if config is None:
        return []
    if not task.prompted:
        raise UserError("the forgetting probes score a causal LM's text; a head model has none: remove "
                        "eval.forgetting", source="eval.forgetting")
    return forgetting_probe.load_probes(config.model_dump(), recipe.seed)


def measure(run) -> dict[str, Any]:
    """The forgetting probes on the run's model as it is now."""
    return forgetting_probe.measure(run.model, run.tokenizer, run.probes, run.recipe.eval.batch_size,
                                    run.spec.precision, run.recipe.training.max_length, run.quiet)
