"""Task kinds (``task.type`` in a recipe) and what each one is, as declared capabilities.

A task kind says which data formats it reads, which metric family judges it, whether its answers are
labels or numbers, whether it trains a head or a preference objective, and how its per-group bias gap is
measured. Everything else (the lifecycle's task shapes in :mod:`lmtune.tasks`, metrics, bias, intervals,
serving) asks these questions instead of comparing task names; a new task in an existing family is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmtune.errors import UserError


@dataclass(frozen=True)
class TaskKind:
    """One task type and its capabilities.

    Attributes:
        name: the recipe's ``task.type``.
        family: the metric family that judges it (``evaluate.metrics``: classification, generation,
            regression, language_modeling, preference).
        formats: the data formats it reads.
        default_for: formats whose records mean this task when nothing else says so (``lmtune data check``).
        labelled: answers are one of ``task.labels`` (label scoring on a causal LM, or a classification head).
        numeric: answers are numbers (a one-output regression head).
        head: trains a sequence-classification head: always (True), never (False), or when the recipe asks
            or the model is an encoder (None).
        per_example: each test example gets a prediction that metrics score, so it has intervals, a bias
            check, a choice of ``eval.metrics`` and ``lmtune score``; perplexity and preference accuracy
            are aggregates instead.
        perplexity: measured as the perplexity of its raw text (continued pre-training).
        preference: trains a preference objective (chosen/rejected pairs, or KTO's unpaired records) and is
            measured by reward accuracy.
        gap_metric: the per-group metric whose difference the bias check reports.
        reward: trains on prompts from a grader's rewards (GRPO, ``training.grpo``), measured by the graders.
    """

    name: str
    family: str
    formats: tuple[str, ...]
    default_for: tuple[str, ...] = ()
    labelled: bool = False
    numeric: bool = False
    head: bool | None = False
    per_example: bool = True
    perplexity: bool = False
    preference: bool = False
    gap_metric: str | None = None
    reward: bool = False


TASK_KINDS: tuple[TaskKind, ...] = (
    TaskKind("classification", "classification", ("classification",), default_for=("classification",),
             labelled=True, head=None, gap_metric="accuracy"),
    TaskKind("generation", "generation", ("completion", "chat", "instruction"), default_for=("completion",),
             gap_metric="rougeL"),
    TaskKind("chat", "generation", ("chat", "instruction", "completion"), default_for=("chat", "instruction"),
             gap_metric="rougeL"),
    TaskKind("regression", "regression", ("classification",), numeric=True, head=True, gap_metric="mse"),
    TaskKind("language_modeling", "language_modeling", ("text",), default_for=("text",), per_example=False,
             perplexity=True),
    # Pairs for DPO, IPO, SimPO, ORPO; unpaired desirable/undesirable records for KTO (training.preference_loss).
    TaskKind("preference", "preference", ("preference", "unpaired_preference"),
             default_for=("preference", "unpaired_preference"), per_example=False, preference=True),
    # GRPO on prompts (a completion or other field is only ever read by the grader, never trained on).
    TaskKind("reward", "reward", ("prompt", "completion"), default_for=("prompt",), reward=True),
)

_BY_NAME = {kind.name: kind for kind in TASK_KINDS}

#: Every ``task.type`` a recipe may name, in registry order.
TASK_TYPES: tuple[str, ...] = tuple(_BY_NAME)


def find(name: str | None) -> TaskKind | None:
    """The task kind registered as ``name``, or None."""
    return _BY_NAME.get(name) if isinstance(name, str) else None


def task_kind(name: str) -> TaskKind:
    """The task kind registered as ``name``.

    Raises:
        UserError: no such task type (names the valid ones).
    """
    if name not in _BY_NAME:
        raise UserError(f"unknown task type {name!r}; choose from {', '.join(TASK_TYPES)}", source="task.type")
    return _BY_NAME[name]


def tasks_of_format(fmt: str) -> tuple[str, ...]:
    """The task types that read data format ``fmt``, the one its records default to first."""
    reading = [kind for kind in TASK_KINDS if fmt in kind.formats]
    return tuple(k.name for k in sorted(reading, key=lambda k: fmt not in k.default_for))


def scored_per_example() -> tuple[str, ...]:
    """Task types whose predictions are scored example by example (what ``lmtune score`` accepts)."""
    return tuple(kind.name for kind in TASK_KINDS if kind.per_example)
