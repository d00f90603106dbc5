"""The recipe's ``search:`` section: the search space of ``lmtune tune``, checked with the rest of the recipe.

``search`` maps a recipe key path to the values a trial may give it::

    search:
      training.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}   # a range (int when both bounds are)
      method.peft.r: [8, 16, 32]                                       # a list of choices
      method.name: [lora, dora]

Here only the shape of each entry is checked (bounds in order, a log range above 0, no empty list); that each
key names a recipe key, and that each value is one the key takes, is :mod:`lmtune.tune.space`'s to check,
when ``lmtune tune`` starts. ``lmtune train`` ignores the section.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

RANGE_KEYS = ("low", "high", "log", "step")
# YAML 1.1 (PyYAML) reads 1e-5 as a string: without a dot, an exponent is not a float there.
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def number(value: Any) -> Any:
    """``value`` as a float when it is a string YAML 1.2 reads as one (``1e-5``); otherwise unchanged."""
    if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_range(key: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A ``{low, high, log, step}`` mapping, normalised; ``ValueError('<key>: <what>')`` if it is not one."""
    unknown = [k for k in spec if k not in RANGE_KEYS]
    if unknown:
        raise ValueError(f"{key}: unknown key {unknown[0]!r} in a range; a range takes {', '.join(RANGE_KEYS)}")
    low, high, step = number(spec.get("low")), number(spec.get("high")), number(spec.get("step"))
    for name, value in (("low", low), ("high", high)):
        if not _is_number(value):
            raise ValueError(f"{key}: a range needs a number for {name} (got {value!r}), e.g. {{low: 1.0e-5, "
                             "high: 1.0e-3, log: true}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{key}: log is true or false (got {log!r})")
    if low > high:
        raise ValueError(f"{key}: low {low} is above high {high}; swap them")
    if log and low <= 0:
        raise ValueError(f"{key}: a log range must lie above 0 (low is {low}); give a positive low")
    if step is not None:
        if not _is_number(step) or step <= 0:
            raise ValueError(f"{key}: step must be a positive number (got {step!r})")
        if log:
            raise ValueError(f"{key}: a range takes step or log: true, not both")
    as_int = all(isinstance(v, int) for v in (low, high) + ((step,) if step is not None else ()))
    convert = int if as_int else float
    return {"low": convert(low), "high": convert(high), "log": log,
            "step": None if step is None else convert(step)}


def check_space(value: Any) -> dict[str, Any] | None:
    """The ``search:`` section normalised (ranges as full mappings, numbers as numbers), or ``ValueError``."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise ValueError("search is a mapping of recipe key paths to a list of choices or a {low, high} range, "
                         "e.g. {training.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}}")
    space: dict[str, Any] = {}
    for key, spec in value.items():
        if not isinstance(key, str) or not key.strip() or " " in key:
            raise ValueError(f"{key!r} is not a key path such as training.learning_rate")
        if isinstance(spec, dict):
            space[key] = check_range(key, spec)
        elif isinstance(spec, list):
            if not spec:
                raise ValueError(f"{key}: an empty choice list; give at least one value, e.g. [8, 16, 32]")
            space[key] = [number(choice) for choice in spec]
        else:
            raise ValueError(f"{key}: give a list of choices such as [8, 16, 32] or a range such as "
                             f"{{low: 1.0e-5, high: 1.0e-3, log: true}} (got {spec!r})")
    return space


#: The type of ``Recipe.search``.
SearchSpace = Annotated[dict[str, Any] | None, BeforeValidator(check_space)]
