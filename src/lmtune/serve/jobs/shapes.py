"""OpenAI's record shapes that lmtune's data stage does not read as they are, each with its conversion.

An upload in one of these shapes is checked as the records it becomes (``files``), stored as uploaded, and
converted into the job's directory when a job trains on it (:func:`convert_rows`), so the file a client
uploaded for OpenAI's reinforcement or DPO fine-tuning works unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmtune.errors import UserError
from lmtune.serve.errors import APIError
from lmtune.serve.jobs import openai_dpo, reinforcement


@dataclass(frozen=True)
class Shape:
    """One of OpenAI's record shapes.

    Attributes:
        format: the upload's ``summary.format``.
        becomes: the lmtune format its records are written in.
        task: the task type they are checked as.
        detect: whether a file (its first record) is in this shape.
        convert: ``(path, target, file name)`` -> what the conversion did (``records``, ``dropped_turns``, ...).
    """

    format: str
    becomes: str
    task: str
    detect: Callable[[Path], bool]
    convert: Callable[[Path, Path, str], dict[str, Any]]


SHAPES = (Shape(reinforcement.RFT, "prompt", "reward", reinforcement.is_rft, reinforcement.convert),
          Shape(openai_dpo.DPO, "preference", "preference", openai_dpo.is_dpo, openai_dpo.convert))


def detect(path: Path) -> Shape | None:
    return next((shape for shape in SHAPES if shape.detect(path)), None)


def lmtune_format(fmt: str) -> str:
    """The lmtune format the records of an upload of ``fmt`` are trained as."""
    return next((shape.becomes for shape in SHAPES if shape.format == fmt), fmt)


def convert_rows(job_dir: Path, train: dict, validation: dict | None) -> tuple[dict, dict | None, dict | None]:
    """The job's files in OpenAI's shapes written in lmtune's formats into ``job_dir``.

    Returns:
        ``(train, validation, converted)``: the file rows the recipe reads (``path`` and ``summary.format``
        changed, and ``system``, a system prompt every record shares) and what converting the training file did
        (None when it was in lmtune's format already).

    Raises:
        APIError: a file that changed on disk since its upload was checked.
    """
    rows, converted = [], None
    for row, name in ((train, "train"), (validation, "validation")):
        shape = next((s for s in SHAPES if row is not None and s.format == row["summary"]["format"]), None)
        if shape is None:
            rows.append(row)
            continue
        target = job_dir / f"{name}.jsonl"
        try:
            done = shape.convert(Path(row["path"]), target, row["filename"])
        except UserError as exc:
            raise APIError(400, f"{exc.source}: {exc.message}", f"{name}_file", "invalid_file") from None
        converted = converted if name == "validation" else done
        rows.append({**row, "path": str(target), "system": done.get("system"),
                     "summary": {**row["summary"], "format": shape.becomes}})
    return rows[0], rows[1], converted
