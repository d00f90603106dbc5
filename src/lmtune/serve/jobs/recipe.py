"""A fine-tuning job request (OpenAI's shape) as an lmtune recipe.

Defaults are those of a practitioner's first LoRA run: LoRA (r 16) on the base, learning rate
2e-4 times ``learning_rate_multiplier``, the data file's own format deciding the task (chat for
``{"messages"}``, generation for ``{"prompt", "completion"}``, classification for
``{"text", "label"}``, DPO for ``{"prompt", "chosen", "rejected"}``; a reinforcement job's RFT records are
``{"prompt"}`` records by then, see :mod:`lmtune.serve.jobs.reinforcement`), 10% held out for the
validation loss unless a validation file is given (or the file is small). ``method.lmtune`` takes
any recipe sections (``method``, ``training``, ``data``, ``task``) laid over these defaults:
where lmtune has more than the OpenAI API (DoRA, IA3, full fine-tuning, max_steps, ...).
"""

from __future__ import annotations

import reprlib
from collections.abc import Collection
from typing import Any

from lmtune.errors import UserError
from lmtune.kinds.tasks import task_kind, tasks_of_format
from lmtune.recipe import recipe_from_dict
from lmtune.serve.errors import APIError
from lmtune.serve.jobs import openai_dpo, reinforcement, shapes
from lmtune.serve.jobs.reinforcement import REASONING_EFFORTS

BASE_LEARNING_RATE = 2e-4
OVERRIDABLE = ("task", "data", "method", "training", "eval")
MIN_RECORDS_FOR_SPLIT = 20
# (type, lowest, highest) of each hyperparameter; OpenAI's ranges for the first two. The bounds also keep
# NaN and infinity out (every comparison with NaN is false), and a job from running for 1e40 epochs.
LIMITS = {"n_epochs": (int, 1, 50), "batch_size": (int, 1, 256), "learning_rate_multiplier": ((int, float), 1e-9, 1e4),
          "beta": ((int, float), 1e-9, 1e4), "eval_interval": (int, 1, 10**6), "eval_samples": (int, 1, 10**4),
          "compute_multiplier": ((int, float), 1e-3, 16)}
#: The hyperparameters each ``method.type`` takes, as OpenAI names them (reasoning_effort is a word, not a number).
COMMON = ("n_epochs", "batch_size", "learning_rate_multiplier")
HYPERPARAMETERS = {"supervised": COMMON, "dpo": (*COMMON, "beta"),
                   "reinforcement": (*COMMON, "eval_interval", "eval_samples", "compute_multiplier",
                                     "reasoning_effort")}


def format_task(fmt: str) -> str | None:
    """The task type a file of ``fmt`` records trains by default (the task kinds' ``default_for``)."""
    tasks = tasks_of_format(shapes.lmtune_format(fmt))
    return tasks[0] if tasks else None


def resolve_hyperparameters(given: dict[str, Any] | None, kind: str = "supervised",
                            nested: Collection[str] = ()) -> dict[str, Any]:
    """OpenAI's hyperparameters of a ``method.type`` with ``auto`` resolved to lmtune's defaults.

    Args:
        given: the request's hyperparameters (top-level and ``method.<kind>.hyperparameters`` merged).
        kind: the method type, which decides the names allowed (:data:`HYPERPARAMETERS`).
        nested: the names given under ``method.<kind>.hyperparameters``, so an error names where it was given.
    """
    given = dict(given or {})
    allowed = HYPERPARAMETERS.get(kind, COMMON)

    def param(name: str) -> str:
        return f"method.{kind}.hyperparameters.{name}" if name in nested else f"hyperparameters.{name}"

    unknown = set(given) - set(allowed)
    if unknown:
        name = min(unknown)
        raise APIError(400, f"Unknown hyperparameter '{name}' for method.type {kind}; use {', '.join(allowed)}.",
                       param(name), "invalid_value")
    out = {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 1.0}
    for key, value in given.items():
        if value in (None, "auto"):
            continue
        if key == "reasoning_effort":
            if value not in REASONING_EFFORTS:
                raise APIError(400, f"Invalid value for 'reasoning_effort': one of {', '.join(REASONING_EFFORTS)}, "
                               f"got {_shown(value)}.", param(key), "invalid_value")
            out[key] = value
            continue
        kind_of, low, high = LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, kind_of) or not low <= value <= high:
            raise APIError(400, f"Invalid value for '{key}': expected 'auto' or a number from {low:g} to {high:g}, "
                           f"got {_shown(value)}.", param(key), "invalid_value")
        out[key] = value
    return out


def _shown(value: Any) -> str:
    """A rejected value as an error message shows it: short, however long or deeply nested the value is."""
    return reprlib.repr(value)


def build_recipe(job_id: str, base_ref: str, train: dict[str, Any], validation: dict[str, Any] | None,
                 hyperparameters: dict[str, Any], method: dict[str, Any], seed: int) -> dict[str, Any]:
    """The recipe (a validated plain dict) that runs this job.

    Args:
        job_id: names the run.
        base_ref: the base model reference (alias or directory).
        train / validation: the uploaded files' rows (``path`` and the ``summary`` of their check).
        hyperparameters: resolved by :func:`resolve_hyperparameters`.
        method: the request's ``method`` (``type`` supervised, dpo or reinforcement, whose ``grader`` is already
            checked; optional ``lmtune`` sections).
        seed: the job's seed.

    Raises:
        APIError: data that does not suit the method, or lmtune sections the recipe schema refuses.
    """
    summary = train["summary"]
    fmt = summary["format"]
    kind = method.get("type", "supervised")
    _check_data(kind, fmt)
    task: dict[str, Any] = {"type": format_task(fmt)}
    if task_kind(task["type"]).labelled:
        task["labels"] = sorted(summary.get("labels") or {})
    if train.get("system"):  # a reinforcement file's common system message (the rest is a template's literal text)
        task["template"] = {"system": train["system"].replace("{", "{{").replace("}", "}}"), "prompt": "{prompt}",
                            "completion": ""}
    held_out = 0.0 if validation or summary["records"] < MIN_RECORDS_FOR_SPLIT else 0.1
    training = {"epochs": hyperparameters["n_epochs"], "batch_size": hyperparameters["batch_size"],
                "learning_rate": BASE_LEARNING_RATE * hyperparameters["learning_rate_multiplier"],
                "log_every": 1}  # a metrics event every step, as OpenAI's jobs report them
    if "beta" in hyperparameters:
        training["dpo_beta"] = hyperparameters["beta"]
    if kind == "reinforcement":
        training.update(reinforcement.training(hyperparameters, method["reinforcement"]["grader"]))
    recipe: dict[str, Any] = {
        "name": job_id, "seed": seed, "model": base_ref, "task": task,
        "data": {"train": train["path"], "validation": validation["path"] if validation else None,
                 "split": {"validation": held_out, "test": 0.0}},
        "method": {"name": "lora"}, "training": training, "eval": {"systems": ["finetuned"]},
    }
    extra = method.get("lmtune") or {}
    if not isinstance(extra, dict) or set(extra) - set(OVERRIDABLE):
        odd = min(set(extra) - set(OVERRIDABLE)) if isinstance(extra, dict) else "lmtune"
        raise APIError(400, f"method.lmtune takes recipe sections {', '.join(OVERRIDABLE)}; not {odd!r}.",
                       f"method.lmtune.{odd}", "invalid_value")
    for section, values in extra.items():
        recipe[section] = _merge(recipe.get(section, {}), values)
    systems = recipe["eval"].get("systems")
    if isinstance(systems, list) and "finetuned" not in systems:  # a job always trains: its model is the result
        recipe["eval"]["systems"] = [*systems, "finetuned"]
    try:
        recipe_from_dict(recipe, source="method.lmtune")
    except UserError as exc:
        raise APIError(400, f"method.lmtune: {exc.problems[0][0]}: {exc.problems[0][1]}",
                       f"method.lmtune.{exc.problems[0][0]}", "invalid_value") from None
    return recipe


#: The record formats each method type trains on, and how they are described in an error.
DATA = {"supervised": (("chat", "completion", "instruction", "classification", "text"),
                       '{"messages"} records ending in the assistant\'s reply (or prompt/completion, text/label)'),
        "dpo": (("preference", "unpaired_preference", openai_dpo.DPO),
                '{"input", "preferred_output", "non_preferred_output"} or {"prompt", "chosen", "rejected"} records'),
        "reinforcement": (("prompt", reinforcement.RFT),
                          '{"messages": [..., {"role": "user", ...}], <fields for the grader>} records')}


def _check_data(kind: str, fmt: str) -> None:
    """The training file's records suit the method type (a worker would otherwise fail on them much later)."""
    if kind not in DATA:
        raise APIError(400, f"method.type {kind!r} is not supported; use {', '.join(DATA)}.", "method.type",
                       "invalid_value")
    if fmt not in DATA[kind][0]:
        fits = next((k for k, (formats, _) in DATA.items() if fmt in formats), None)
        hint = f" (they suit method.type {fits})" if fits else ""
        raise APIError(400, f"The training file has {fmt} records{hint}; {kind} fine-tuning needs {DATA[kind][1]}.",
                       "method.type", "invalid_value")


def _merge(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in extra.items()}}
    return extra
