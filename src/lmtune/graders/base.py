"""What every grader is: a batch of samples and their dataset items in, one score per sample out, with what
went wrong counted instead of raised (a grader that fails on one sample must not stop a run or a GRPO step)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

#: Distinct problem messages a result keeps (enough to tell a user what is wrong, few enough to print).
MAX_MESSAGES = 5


@dataclass
class GradeResult:
    """One grader's scores on a batch.

    Attributes:
        scores: one per sample, in order; a sample the grader could not score has 0.
        errors: samples whose grading raised (a python grader's exception, a formula's division by zero).
        timeouts: samples a python grader did not finish within its time limit.
        unparsable: samples whose needed output could not be read (a judge's answer without a number, a
            ``{{sample.output_json.<key>}}`` of an output that is not JSON or lacks the key).
        messages: the first few distinct problems, e.g. ``"sample 3: ZeroDivisionError: division by zero"``.
        parts: a multi grader's sub-graders' scores by key (OpenAI's sub_rewards).
    """

    scores: list[float]
    errors: int = 0
    timeouts: int = 0
    unparsable: int = 0
    messages: list[str] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)

    @property
    def problems(self) -> int:
        """Samples scored 0 because grading failed, whatever the cause."""
        return self.errors + self.timeouts + self.unparsable

    def note(self, kind: str, index: int, message: str) -> None:
        """Count a failed sample (``kind``: errors, timeouts or unparsable), its score 0, and keep its message."""
        setattr(self, kind, getattr(self, kind) + 1)
        self.scores[index] = 0.0
        text = f"sample {index}: {message}"
        if len(self.messages) < MAX_MESSAGES and all(m.split(": ", 1)[1] != message for m in self.messages):
            self.messages.append(text)

    def add_counts(self, other: GradeResult) -> None:
        """Add ``other``'s counts and messages to these (a multi grader reports its sub-graders' problems)."""
        self.errors += other.errors
        self.timeouts += other.timeouts
        self.unparsable += other.unparsable
        for message in other.messages:
            if len(self.messages) < MAX_MESSAGES and message not in self.messages:
                self.messages.append(message)


class Grader:
    """A grader built from its config (:func:`lmtune.graders.build`); subclasses implement :meth:`grade`."""

    def __init__(self, name: str):
        self.name = name

    def grade(self, samples: list[str], items: list[dict[str, Any]]) -> GradeResult:
        """Score each sample (a model's output text) against its dataset item.

        Args:
            samples: the outputs, e.g. a group of completions of one prompt.
            items: the dataset record of each sample (``{{item.<field>}}``), aligned with ``samples``.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release what the grader holds (a judge model); a closed grader is not used again."""


def check_batch(samples: list[str], items: list[dict[str, Any]]) -> None:
    """Raise ValueError unless every sample has its item (a caller's bug, not a grading failure)."""
    if len(samples) != len(items):
        raise ValueError(f"{len(samples)} samples but {len(items)} items; give each sample its dataset item")


def sample_of(text: str) -> dict[str, Any]:
    """OpenAI's ``sample`` namespace for an output text: ``output_text``, and ``output_json`` when the text is
    valid JSON (None otherwise, as OpenAI leaves it unpopulated)."""
    try:
        parsed = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        parsed = None
    return {"output_text": text, "output_json": parsed}


def as_score(value: Any) -> float:
    """A grader's return value as a float.

    Raises:
        ValueError: not a real, finite number (a string, None, NaN).
    """
    if isinstance(value, (int, float)) and not isinstance(value, complex):
        score = float(value)
        if math.isfinite(score):
            return score
    raise ValueError(f"returned {value!r}, not a finite number")
