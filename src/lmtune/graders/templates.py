"""OpenAI's grader templates: ``{{ sample.output_text }}``, ``{{ sample.output_json.<path> }}`` and
``{{ item.<path> }}`` filled in for one sample.

Which variables a template may name is checked with the recipe (:func:`lmtune.recipe_graders.check_template`);
whether the data records have each ``item`` field is checked against them before anything runs
(:func:`missing_field`). What only a sample can lack (``output_json`` of an output that is not JSON) is found
while grading: :class:`Unreadable`, which the grader counts as unparsable.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lmtune.recipe_graders import VARIABLE, item_paths

_STEP = re.compile(r"\.([^.\[\]\s{}]+)|\[(\d+)\]")
_MISSING = object()


class Unreadable(Exception):
    """A sample variable that this sample does not have (its output is not JSON, or lacks the key)."""


def lookup(value: Any, path: str) -> Any:
    """``value`` followed along ``path`` (``.key`` and ``[i]`` steps, as in ``meta.tags[0]``); a sentinel when a
    step is missing."""
    for key, index in _STEP.findall(path if path.startswith(("[", ".")) else "." + path):
        if index:
            if not isinstance(value, list) or int(index) >= len(value):
                return _MISSING
            value = value[int(index)]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            return _MISSING
    return value


def render(template: str, sample: dict[str, Any], item: dict[str, Any]) -> str:
    """``template`` with each variable replaced by its value: text as it is, anything else as JSON.

    Raises:
        Unreadable: a ``sample.output_json`` variable this sample does not have.
        KeyError: an ``item`` field this item lacks (checked before grading: :func:`missing_field`).
    """
    def value(match: re.Match) -> str:
        namespace, _, path = match.group(1).partition(".")
        found = lookup(sample if namespace == "sample" else item, path)
        if found is _MISSING or (namespace == "sample" and path.startswith("output_json") and found is None):
            if namespace == "sample":
                raise Unreadable(f"{{{{{match.group(1)}}}}}: the output is not JSON or has no such key")
            raise KeyError(match.group(1))
        return found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)
    return VARIABLE.sub(value, template)


def missing_field(templates: list[str], items: list[dict[str, Any]]) -> tuple[int, str] | None:
    """The first (item index, path) of an ``{{item.<path>}}`` that an item lacks; None when all have them all."""
    paths = [p for t in templates for p in item_paths(t)]
    for i, item in enumerate(items):
        for path in paths:
            if lookup(item, path) is _MISSING:
                return i, path
    return None
