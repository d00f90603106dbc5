"""OpenAI's ``multi`` grader (a formula over several graders' scores) and lmtune's ``callable`` grader (a
Python function by import path)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import simpleeval

from lmtune.graders.base import Grader, GradeResult, as_score, check_batch, sample_of
from lmtune.recipe_graders import formula_evaluator, formula_source


class MultiGrader(Grader):
    """Each sub-grader scores the batch; ``calculate_output`` combines their scores per sample.

    A sub-grader's failed sample scores 0 there (counted in this grader's result too) and the formula goes on
    with that 0, as OpenAI's multigrader does with a failed sub-grader. A formula that fails on a sample's
    scores (a division by zero, the log of 0) scores that sample 0, counted as an error.
    """

    def __init__(self, name: str, graders: dict[str, Grader], formula: str):
        super().__init__(name)
        self.graders, self.formula = graders, formula_source(formula)
        self.parsed = simpleeval.SimpleEval.parse(self.formula)

    def grade(self, samples: list[str], items: list[dict[str, Any]]) -> GradeResult:
        check_batch(samples, items)
        result = GradeResult([0.0] * len(samples))
        for key, grader in self.graders.items():
            part = grader.grade(samples, items)
            result.parts[key] = part.scores
            result.add_counts(part)
        for i in range(len(samples)):
            names = {key: scores[i] for key, scores in result.parts.items()}
            try:
                result.scores[i] = as_score(formula_evaluator(names).eval(self.formula, self.parsed))
            except (ArithmeticError, ValueError, simpleeval.InvalidExpression) as exc:
                result.note("errors", i, f"calculate_output {self.formula!r} on {names}: {exc}")
        return result

    def close(self) -> None:
        for grader in self.graders.values():
            grader.close()


class CallableGrader(Grader):
    """``function(sample, item) -> float`` called in this process, sample by sample.

    No subprocess and no time limit: the function is the user's own installed code, called as fast as a
    function call (use a ``python`` grader for code that may hang). One that raises or returns something other
    than a number scores 0 there, counted as an error.
    """

    def __init__(self, name: str, function: Callable[[dict, dict], Any]):
        super().__init__(name)
        self.function = function

    def grade(self, samples: list[str], items: list[dict[str, Any]]) -> GradeResult:
        check_batch(samples, items)
        result = GradeResult([0.0] * len(samples))
        for i, (text, item) in enumerate(zip(samples, items)):
            try:
                result.scores[i] = as_score(self.function(sample_of(text), item))
            except Exception as exc:  # the user's function failing on one sample scores it 0, counted
                result.note("errors", i, f"{type(exc).__name__}: {exc}")
        return result


def import_function(path: str) -> Callable:
    """The function ``path`` names (``package.module:function``), imported now.

    Raises:
        ValueError: the module cannot be imported, or has no such callable.
    """
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module's own code failing on import
        raise ValueError(f"cannot import {module_name!r} ({type(exc).__name__}: {exc}); install it or put its "
                         "directory on PYTHONPATH") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"module {module_name!r} has no function {attribute!r}")
    return function
