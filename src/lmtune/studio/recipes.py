"""Recipes for the New-run page: the files of the recipes folder, and recipe text checked before a run is queued.

A recipe file is read by its file name only: a name with a slash, a leading dot, or one that resolves
outside the folder (a symlink leading out) is not found. :func:`check` reports every problem of a recipe
text at once, each keyed by where it is (``line 3`` for YAML syntax, ``training.learning_rate`` for the
schema, ``data.train`` for a data file that is not there), and runs nothing slow: no model is loaded and
no data file is read. Relative data paths are resolved from the studio's working directory, exactly as
``lmtune train`` resolves them from its own; the recipe a job runs holds them absolute.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from lmtune.errors import UserError
from lmtune.recipe import recipe_from_dict

SUFFIXES = (".yaml", ".yml")
MAX_CHARS = 1_000_000  # a recipe is a page of YAML; this keeps a pasted data file out of the job store
DATA_FILES = ("train", "validation", "test")
_VALID_KEYS = re.compile(r"unknown key '([^']*)'; valid keys here: ([^(]+?) \(")


class RecipeNotFound(LookupError):
    """No recipe file of that name in the recipes folder (or no recipes folder)."""


def listing(folder: Path | None) -> list[str]:
    """The recipe files directly in ``folder`` (``.yaml``/``.yml``, those :func:`read` can open), sorted."""
    if folder is None or not Path(folder).is_dir():
        return []
    names = []
    for path in Path(folder).iterdir():
        try:
            names.append(_path(folder, path.name).name)
        except RecipeNotFound:
            continue
    return sorted(names)


def read(folder: Path | None, name: str) -> str:
    """The text of the recipe file ``name`` in ``folder``.

    Raises:
        RecipeNotFound: no folder, ``name`` is not a plain recipe file name, or no such file is inside the folder.
        UserError: the file is too large or not UTF-8.
    """
    path = _path(folder, name)
    if path.stat().st_size > MAX_CHARS:
        raise UserError(f"larger than {MAX_CHARS} bytes; is this a recipe?", source=name)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError("not UTF-8 text; save the recipe as UTF-8", source=name) from None


def _path(folder: Path | None, name: str) -> Path:
    if folder is None or not isinstance(name, str):
        raise RecipeNotFound(name)
    plain = name and not name.startswith(".") and "/" not in name and "\\" not in name and "\0" not in name
    if not plain or not name.endswith(SUFFIXES):
        raise RecipeNotFound(name)
    root = Path(folder).resolve()
    try:
        path = (root / name).resolve()
        found = path.parent == root and path.is_file()
    except (OSError, RuntimeError):  # a symlink loop, a name too long
        found = False
    if not found:
        raise RecipeNotFound(name)
    return path


def check(text: str, cwd: Path | None = None) -> dict[str, Any]:
    """Validate recipe text completely, short of loading anything; return the recipe a job runs.

    Args:
        text: the YAML recipe.
        cwd: where relative data paths are resolved from (default: this process's working directory).

    Returns:
        The validated recipe as a plain dict, every default filled in, data paths absolute.

    Raises:
        UserError: every problem, in ``problems``, each as ``(key path or "line N", message)``.
    """
    if not isinstance(text, str) or not text.strip():
        raise UserError("the recipe is empty; pick a recipe file or write one", source="recipe")
    if len(text) > MAX_CHARS:
        raise UserError(f"longer than {MAX_CHARS} characters; is this a recipe?", source="recipe")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "recipe"
        raise UserError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", source=where) from None
    if not isinstance(raw, dict):
        raise UserError("a recipe is a YAML mapping (name:, model:, task:, data:, ...)", source="recipe")
    try:
        recipe = recipe_from_dict(raw).model_dump(mode="json")
    except UserError as exc:
        problems = [(key, _with_hint(message)) for key, message in exc.problems]
        named = {key for key, _ in problems}  # the missing data files too, so one pass fixes everything
        problems += [p for p in data_problems(raw, cwd) if p[0] not in named]
        raise UserError(problems[0][1], source=problems[0][0], problems=problems) from None
    problems = _absolute_data(recipe["data"], Path(cwd) if cwd is not None else Path.cwd())
    if problems:
        raise UserError(problems[0][1], source=problems[0][0], problems=problems)
    return recipe


def data_problems(recipe: dict[str, Any], cwd: Path | None = None) -> list[tuple[str, str]]:
    """The data files a saved recipe names that are not there (relative paths from ``cwd``), keyed by path."""
    data = recipe.get("data")
    data = dict(data) if isinstance(data, dict) else {}
    contamination = data.get("contamination")
    data["contamination"] = list(contamination) if isinstance(contamination, list) else []
    added = data.get("add_train")
    data["add_train"] = list(added) if isinstance(added, list) else []
    return _absolute_data(data, Path(cwd) if cwd is not None else Path.cwd())


def _absolute_data(data: dict[str, Any], cwd: Path) -> list[tuple[str, str]]:
    """Make the file paths of a recipe's ``data`` section absolute, in place; the ones missing, as problems."""
    problems = []

    def resolve(key: str, value: Any) -> Any:
        if not isinstance(value, str) or value.startswith("asset:"):
            return value  # a packaged asset is fetched (and checked) by the run itself
        path = Path(value).expanduser()
        path = path if path.is_absolute() else cwd / path
        if not path.is_file():
            why = "is a folder, not a data file" if path.is_dir() else "no such file"
            shown = value if Path(value).is_absolute() else f"{value} (from {cwd})"
            problems.append((key, f"{why}: {shown}"))
        return str(path)

    for key in DATA_FILES:
        data[key] = resolve(f"data.{key}", data.get(key))
    if data.get("corrections") is not None:
        data["corrections"] = resolve("data.corrections", data["corrections"])
    for key in ("contamination", "add_train"):
        data[key] = [resolve(f"data.{key}.{i}", v) for i, v in enumerate(data[key])]
    return problems


def _with_hint(message: str) -> str:
    """An unknown-key message with the valid key it most resembles (a typo), when one is close."""
    found = _VALID_KEYS.search(message)
    if not found:
        return message
    close = difflib.get_close_matches(found.group(1), [k.strip() for k in found.group(2).split(",")], n=1)
    if not close:
        return message
    head = f"unknown key {found.group(1)!r}"
    return message.replace(head, f"{head} (did you mean {close[0]!r}?)", 1)
