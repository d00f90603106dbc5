"""The search space of ``lmtune tune``: checked against the recipe schema, sampled by a trial, set into a recipe.

``recipe.search`` (already shaped by :mod:`lmtune.recipe_search`) maps key paths to choices or ranges. Before
anything slow, :func:`check` makes sure each path names a recipe key (with a did-you-mean when it does not)
and that each choice, and each end of each range, is a value that key takes: one line and exit 2 otherwise.
A combination the schema refuses only together (``training.packing`` with a prefix method) is found per trial.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from lmtune.errors import UserError
from lmtune.kinds import systems as system_kinds
from lmtune.recipe import Recipe, apply_override, recipe_from_dict

#: Keys a search may not set: the trial's name is its own, and a space inside a space means nothing.
NOT_SEARCHED = ("name", "search")
#: The most characters of a recipe name (lmtune.recipe.RUN_NAME).
MAX_NAME = 100


@dataclass(frozen=True)
class Dimension:
    """One searched key: a list of choices, or a range (int when both bounds are ints)."""

    key: str
    choices: list[Any] | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None

    @property
    def labels(self) -> list[Any]:
        """The choices as Optuna's categorical distribution holds them: scalars as they are, lists and
        mappings as their JSON text (Optuna stores only None, bool, int, float and str)."""
        return [c if c is None or isinstance(c, bool | int | float | str) else json.dumps(c) for c in self.choices]

    def value(self, param: Any) -> Any:
        """The recipe value of Optuna's parameter ``param`` (a label back to its choice)."""
        return self.choices[self.labels.index(param)] if self.choices is not None else param


def dimensions(search: dict[str, Any]) -> list[Dimension]:
    """The dimensions of a checked ``recipe.search``, in the recipe's order."""
    return [Dimension(key, choices=list(spec)) if isinstance(spec, list) else Dimension(key, **spec)
            for key, spec in search.items()]


def check(recipe: Recipe) -> list[Dimension]:
    """Check ``recipe.search`` against the schema and return its dimensions.

    Raises:
        UserError: no ``search:``; a key that names no recipe key (``search.<key>``, with a did-you-mean);
            a choice or range end the key does not take; no validation split to score trials on.
    """
    if not recipe.search:
        raise UserError("lmtune tune needs a search space: add e.g. search: {training.learning_rate: {low: 1.0e-5, "
                        "high: 1.0e-3, log: true}, method.peft.r: [8, 16, 32]}", source="search")
    for key in recipe.search:
        check_key(key)
    if recipe.data.validation is None and recipe.data.split.validation == 0:
        raise UserError("lmtune tune scores each trial on the validation split and prunes on its loss; hold some "
                        "data out (e.g. data.split.validation: 0.1) or give data.validation",
                        source="data.split.validation")
    dims = dimensions(recipe.search)
    base = base_dict(recipe)
    for dim in dims:
        _check_values(base, dim)
    return dims


def check_key(key: str) -> None:
    """Refuse a key path that names no recipe key (or one that may not be searched), suggesting the nearest."""
    if key.split(".")[0] in NOT_SEARCHED:
        raise UserError(f"{key} cannot be searched (each trial is named by lmtune tune)", source=f"search.{key}")
    problem = _missing_part(key.split("."))
    if problem is None:
        return
    near = difflib.get_close_matches(key, key_paths(), n=1, cutoff=0.6)
    if near:
        raise UserError(f"no recipe key {key}; did you mean {near[0]}?", source=f"search.{key}")
    raise UserError(f"no recipe key {key}: {problem} (see \"Recipes\" in README.md)", source=f"search.{key}")


def _missing_part(parts: list[str]) -> str | None:
    """Why ``parts`` is no key path of the recipe, or None when it is one.

    Every part must be a field of the section before it; below a free mapping (``method.peft``,
    ``data.fields``) any key goes, as the recipe passes those on unchanged.
    """
    section: type[BaseModel] | None = Recipe
    parent: Any = Recipe
    for i, part in enumerate(parts):
        if section is None:
            if _free_mapping(parent):
                return None
            return f"{'.'.join(parts[:i])} is a value, not a section"
        if part not in section.model_fields:
            where = ".".join(parts[:i]) or "the top level"
            return f"{part!r} is not a key of {where} (keys there: {', '.join(section.model_fields)})"
        parent = section.model_fields[part].annotation
        section = _section(parent)
    return None


def _section(annotation: Any) -> type[BaseModel] | None:
    """The recipe section class in a field's type (``X``, ``X | None``, ``str | X``), or None for a value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _section(arg)
        if found is not None:
            return found
    return None


def _free_mapping(annotation: Any) -> bool:
    """Whether a field's type is (or admits) a plain mapping whose keys the recipe does not fix."""
    if get_origin(annotation) is dict or annotation is dict:
        return True
    return any(_free_mapping(arg) for arg in get_args(annotation))


def key_paths(section: type[BaseModel] = Recipe, prefix: str = "") -> list[str]:
    """Every key path of the recipe schema (sections and values), for suggestions."""
    paths = []
    for name, info in section.model_fields.items():
        path = prefix + name
        paths.append(path)
        inner = _section(info.annotation)
        if inner is not None:
            paths += key_paths(inner, path + ".")
    return paths


def _check_values(base: dict[str, Any], dim: Dimension) -> None:
    """Each choice (or each end of the range) of ``dim`` set alone into the recipe: a problem the schema
    finds at the key itself is the search space's; one elsewhere may be a combination, left to the trials."""
    values = dim.choices if dim.choices is not None else [dim.low, dim.high]
    for value in values:
        try:
            recipe_from_dict(with_values(base, {dim.key: value}))
        except UserError as exc:
            mine = [msg for src, msg in exc.problems if src and (src == dim.key or src.startswith(dim.key + "."))]
            if mine:
                raise UserError(f"{value!r} is not a value {dim.key} takes: {mine[0]}",
                                source=f"search.{dim.key}") from None


def base_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as written (the keys it sets, ``--set`` overrides included), ready to take a trial's values."""
    return recipe.model_dump(mode="json", exclude_unset=True)


def with_values(base: dict[str, Any], values: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """A copy of ``base`` with each ``key.path: value`` set as ``--set`` sets it, ``search:`` removed and, if
    given, ``name`` as the recipe's name."""
    raw = copy.deepcopy(base)
    raw.pop("search", None)
    if name is not None:
        raw["name"] = name
    for key, value in values.items():
        apply_override(raw, f"{key}=null")  # the same path rules as --set (model: <ref> is {name: <ref>})
        node = raw
        for part in key.split(".")[:-1]:
            node = node[part]
        node[key.split(".")[-1]] = copy.deepcopy(value)
    return raw


def trial_dict(base: dict[str, Any], values: dict[str, Any], name: str, number: int) -> dict[str, Any]:
    """A trial's recipe: the fine-tuned systems of ``eval.systems`` only (``finetuned`` when it has none: the
    baselines do not depend on the hyperparameters), no bias or forgetting probes, then the trial's values."""
    trained = [s for s in Recipe.model_validate(base).eval.systems if system_kinds.is_trained(s)]
    raw = with_values(base, {}, trial_name(name, number))
    raw.setdefault("eval", {}).update({"systems": trained or ["finetuned"], "bias": None, "forgetting": None})
    return with_values(raw, values)


def trial_name(name: str, number: int) -> str:
    """``<name>-trial-<n>``, or ``name`` itself where that would be too long for a run name."""
    suffixed = f"{name}-trial-{number}"
    return suffixed if len(suffixed) <= MAX_NAME else name


def best_name(name: str) -> str:
    """``<name>-best``: the name of the best recipe and of its final run (``name`` itself where too long)."""
    return f"{name}-best" if len(name) <= MAX_NAME - 5 else name


def suggest(trial, dims: list[Dimension]) -> dict[str, Any]:
    """The trial's value for each dimension, drawn by its sampler (Optuna's ``suggest_*``)."""
    values = {}
    for dim in dims:
        if dim.choices is not None:
            values[dim.key] = dim.value(trial.suggest_categorical(dim.key, dim.labels))
        elif isinstance(dim.low, int) and isinstance(dim.high, int):
            values[dim.key] = trial.suggest_int(dim.key, dim.low, dim.high, step=dim.step or 1, log=dim.log)
        else:
            values[dim.key] = trial.suggest_float(dim.key, dim.low, dim.high, step=dim.step, log=dim.log)
    return values


def values_of(params: dict[str, Any], dims: list[Dimension]) -> dict[str, Any]:
    """A finished trial's recipe values from its Optuna parameters."""
    return {dim.key: dim.value(params[dim.key]) for dim in dims if dim.key in params}
