"""Evaluation systems (``eval.systems`` in a recipe): the ways of answering the test split that a run compares.

Each entry declares what its answers need: a fine-tuned model, solved examples in the prompt, retrieved
passages, another model, or no model at all. The lifecycle, the task shapes and the report ask these
questions instead of matching names (``startswith("finetuned")``), so a new system is one entry here and,
if it needs something no entry needs yet, one branch where that need is met.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmtune.errors import UserError

#: A system named ``model:<ref>`` prompts another model (a larger base, say) zero-shot.
OTHER_MODEL_PREFIX = "model:"


@dataclass(frozen=True)
class SystemKind:
    """One evaluation system and what it needs.

    Attributes:
        name: the name in ``eval.systems`` (``model:`` for the ``model:<ref>`` family).
        trained: answers with the fine-tuned model, so it runs after training.
        shots: solved training examples go in the prompt (``eval.few_shot_k``, ``eval.few_shot_selection``).
        retrieval: passages retrieved from ``eval.rag.corpus`` go in the prompt.
        other_model: answers with the model named after ``model:``, not the recipe's.
        constant: no model at all: one answer for every input (the majority class or the mean target),
            a floor to beat rather than an alternative to fine-tuning.
        shapes: the task shapes (:mod:`lmtune.tasks`) it applies to: ``tokens`` (a causal LM learning target
            tokens), ``head`` (a classification or regression head), ``preference`` (DPO pairs).
        derived: a result a later stage adds under this name, not a choice in ``eval.systems`` (``self_trained``:
            the last round of ``training.self_training``).
        compared_with: the system it is a variant of; the significance tests always compare the two.
    """

    name: str
    trained: bool = False
    shots: bool = False
    retrieval: bool = False
    other_model: bool = False
    constant: bool = False
    shapes: frozenset[str] = frozenset({"tokens"})
    derived: bool = False
    compared_with: str | None = None

    @property
    def reads_examples(self) -> bool:
        """Its prompt is built from each test example's fields (shots or retrieved passages need a question)."""
        return self.shots or self.retrieval


SYSTEM_KINDS: tuple[SystemKind, ...] = (
    SystemKind("zero_shot", shapes=frozenset({"tokens", "preference"})),
    SystemKind("few_shot", shots=True),
    SystemKind("rag", retrieval=True),
    SystemKind("finetuned", trained=True, shapes=frozenset({"tokens", "head", "preference"})),
    SystemKind("finetuned+rag", trained=True, retrieval=True),
    # No shapes: no task answers as it; run_rounds (lifecycle.self_training) adds its results.
    SystemKind("self_trained", trained=True, shapes=frozenset(), derived=True, compared_with="finetuned"),
    SystemKind("majority", constant=True, shapes=frozenset({"head"})),
    SystemKind(OTHER_MODEL_PREFIX, other_model=True),
)

_BY_NAME = {kind.name: kind for kind in SYSTEM_KINDS}

#: The fixed system names a recipe may use, besides ``model:<ref>``.
SYSTEM_NAMES: tuple[str, ...] = tuple(k.name for k in SYSTEM_KINDS if not k.other_model and not k.derived)


def find(name: str) -> SystemKind | None:
    """The system ``name`` is an instance of (``model:org/x`` -> the ``model:`` entry), or None if unknown."""
    if name.startswith(OTHER_MODEL_PREFIX) and len(name) > len(OTHER_MODEL_PREFIX):
        return _BY_NAME[OTHER_MODEL_PREFIX]
    return _BY_NAME.get(name) if name != OTHER_MODEL_PREFIX else None


def choosable(name: str) -> bool:
    """Whether ``eval.systems`` may name ``name`` (a known system that no later stage derives)."""
    kind = find(name)
    return kind is not None and not kind.derived


def system_kind(name: str) -> SystemKind:
    """Like :func:`find`, for a name that must be known.

    Raises:
        UserError: an unknown system (names the valid ones).
    """
    kind = find(name)
    if kind is None:
        raise UserError(f"unknown system {name!r}; choose from {', '.join(SYSTEM_NAMES)} or model:<ref>",
                        source="eval.systems")
    return kind


def other_model(name: str) -> str:
    """The model reference of a ``model:<ref>`` system."""
    return name.removeprefix(OTHER_MODEL_PREFIX)


def is_trained(name: str) -> bool:
    """Whether a system answers with the fine-tuned model."""
    kind = find(name)
    return kind is not None and kind.trained


def is_constant(name: str) -> bool:
    """Whether a system (as named in a run's results) gives one answer for every input."""
    kind = find(name)
    return kind is not None and kind.constant


def for_shape(shape: str) -> list[str]:
    """The systems that apply to a task shape, as a reader would write them (``model:<ref>``)."""
    return [k.name + ("<ref>" if k.other_model else "") for k in SYSTEM_KINDS if shape in k.shapes]


def main_trained(systems: list[str]) -> str:
    """The fine-tuned system whose score stands for a run (a tuning trial's objective, a learning curve's points):
    ``finetuned`` unless ``systems`` names other fine-tuned systems only."""
    trained = [s for s in systems if is_trained(s)]
    return "finetuned" if "finetuned" in trained or not trained else trained[0]
