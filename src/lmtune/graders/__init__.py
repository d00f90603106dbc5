"""Graders: a model's outputs scored against their dataset items, in OpenAI's grader schema.

``build(config)`` turns one grader object (:mod:`lmtune.recipe_graders`, or a dict in OpenAI's JSON shape)
into a :class:`Grader`, whose ``grade(samples, items)`` scores a batch and returns a :class:`GradeResult`:
a score per sample, and counts of the samples it could not score (each scored 0) instead of an exception.
Evaluation grades each system's predictions with ``eval.graders``; a GRPO objective grades a group of
completions per prompt with the same call. :func:`check` finds, before anything runs, what only the data or
the machine can tell: an ``{{item.<field>}}`` the records lack, a python grader's file, a callable's module,
a judge model that does not resolve.

One module per kind: :mod:`.text` (string_check, text_similarity), :mod:`.python_grader` (python),
:mod:`.judge` (score_model), :mod:`.combined` (multi, callable); a new kind is an entry in :data:`BUILDERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmtune.errors import UserError
from lmtune.graders import text
from lmtune.graders.base import Grader, GradeResult, sample_of
from lmtune.graders.combined import CallableGrader, MultiGrader, import_function
from lmtune.graders.python_grader import PythonGrader, read_source
from lmtune.graders.templates import missing_field
from lmtune.recipe_graders import parse_grader

__all__ = ["BUILDERS", "GradeResult", "Grader", "build", "check", "sample_of", "templates_of"]


def _python(name: str, config, batch_size: int) -> Grader:
    code, filename = read_source(config)
    return PythonGrader(name, code, filename, config.timeout_s)


def _judge(name: str, config, batch_size: int) -> Grader:
    from lmtune.graders.judge import ScoreModelGrader  # torch and transformers only for a judge

    return ScoreModelGrader(name, config, batch_size)


def _multi(name: str, config, batch_size: int) -> Grader:
    return MultiGrader(name, {key: _built(sub, key, batch_size) for key, sub in config.graders.items()},
                       config.calculate_output)


#: ``type`` -> ``(name, config, batch_size) -> Grader``.
BUILDERS: dict[str, Callable[[str, Any, int], Grader]] = {
    "string_check": lambda name, config, batch_size: text.string_check(name, config),
    "text_similarity": lambda name, config, batch_size: text.text_similarity(name, config),
    "python": _python,
    "score_model": _judge,
    "multi": _multi,
    "callable": lambda name, config, batch_size: CallableGrader(name, import_function(config.path)),
}


def build(config, name: str | None = None, batch_size: int = 8, source: str | None = None) -> Grader:
    """A grader ready to :meth:`~Grader.grade` (a ``score_model`` judge is loaded now, once).

    Args:
        config: a grader object of :mod:`lmtune.recipe_graders`, or its dict (OpenAI's JSON shape).
        name: what the grader is called (``eval.graders``' key); default its ``name``, else its type.
        batch_size: prompts a judge answers at once.
        source: where the config came from, for errors (``eval.graders.format``).

    Raises:
        UserError: the config is not a grader, or what it names cannot be had (file, module, model).
    """
    try:
        config = parse_grader(config)
    except ValueError as exc:
        raise UserError(str(exc), source=source or "grader") from None
    return _built(config, name or config.name or config.type, batch_size, source)


def _built(config, name: str, batch_size: int, source: str | None = None) -> Grader:
    try:
        return BUILDERS[config.type](name, config, batch_size)
    except ValueError as exc:
        raise UserError(str(exc), source=source or f"grader {name}") from None


def templates_of(config, prefix: str = "") -> list[tuple[str, str]]:
    """Every ``(key path, template)`` of a grader (a multi grader's sub-graders' too)."""
    if config.type in ("string_check", "text_similarity"):
        return [(prefix + "input", config.input), (prefix + "reference", config.reference)]
    if config.type == "score_model":
        return [(f"{prefix}input.{i}.content", m.text()) for i, m in enumerate(config.input)]
    if config.type == "multi":
        return [t for key, sub in config.graders.items() for t in templates_of(sub, f"{prefix}graders.{key}.")]
    return []


def check(config, items: list[dict[str, Any]], source: str, where: list[str] | None = None) -> None:
    """What a grader needs from the data and the machine, checked before anything is graded.

    Args:
        config: a grader object (or its dict).
        items: the records it will grade against (every one must have each ``{{item.<field>}}``).
        source: the grader's key path, e.g. ``eval.graders.format``; errors name the key under it.
        where: each item's origin (``data.jsonl:12``), for the error.

    Raises:
        UserError: a field the records lack, an unreadable python file, a module that does not import, a judge
            model that does not resolve.
    """
    try:
        config = parse_grader(config)
    except ValueError as exc:
        raise UserError(str(exc), source=source) from None
    for key, template in templates_of(config):
        missing = missing_field([template], items)
        if missing is not None:
            i, path = missing
            fields = ", ".join(sorted(items[i])) or "none"
            record = f"{where[i]} has" if where else f"record {i} has"
            raise UserError(f"{{{{item.{path}}}}}: {record} no field {path!r} (its fields: {fields}); name a field "
                            "of the data records", source=f"{source}.{key}")
    _check_machine(config, source)


def _check_machine(config, source: str) -> None:
    """The file, module or model a grader names exists here (a multi grader's sub-graders too)."""
    try:
        if config.type == "python" and config.file is not None:
            read_source(config)
        elif config.type == "callable":
            import_function(config.path)
    except ValueError as exc:
        key = "file" if config.type == "python" else "path"
        raise UserError(str(exc), source=f"{source}.{key}") from None
    if config.type == "score_model":
        from lmtune.assets import resolve_model

        try:
            resolve_model(config.model)
        except UserError as exc:
            raise UserError(exc.message, source=f"{source}.model") from None
    if config.type == "multi":
        for key, sub in config.graders.items():
            _check_machine(sub, f"{source}.graders.{key}")
