"""The studies of a runs folder: hyperparameter searches, learning curves and active-learning experiments.

Besides runs, the folder holds directories that group many runs, each known by one file: ``study.db`` (a
search of ``lmtune tune``, its trials at ``<study>/trial-<n>/``), ``curve.json`` (``lmtune curve``, its points at
``<study>/points/n<size>-r<repeat>/``) and ``active.json`` (``lmtune active --oracle``, its rounds at
``<study>/<strategy>-s<seed>/round-<r>/``). A study's name in URLs is its directory name, looked up only through
:func:`study_dir`, which goes through :func:`lmtune.studio.index.directory` like every run name; a study's runs
are linked by their nested names (``<study>~trial-3``) and open on the ordinary Run page.

Those runs belong to their study's command, which resumes a killed study itself: :func:`read_only` refuses the
studio's writes (resume, cancel) on them, so a pruned trial is never trained again as a run of its own.
The files are read while the command writes them: whatever cannot be parsed yet leaves its part empty.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from lmtune.studio import index
from lmtune.studio.cache import stamp
from lmtune.studio.security import SAFE_METHODS

#: (kind, the file that makes a directory a study of that kind, the URL its page lives under)
KINDS = (("tune", "study.db", "/tune"), ("curve", "curve.json", "/curves"), ("active", "active.json", "/active"))
MARKERS = {kind: marker for kind, marker, _ in KINDS}
PAGES = {kind: url for kind, _, url in KINDS}
#: The longest text taken from a study's files (a statement, a note); longer ones are cut.
MAX_TEXT = 2000


class StudyNotFound(LookupError):
    """No study of that kind and name in the runs folder."""

    def __init__(self, kind: str, name: Any):
        super().__init__(f"no {kind} study called {str(name)[:200]!r}")
        self.kind = kind


@dataclass(frozen=True)
class Study:
    """One study directory: its kind, its name (the directory's) and its path."""

    kind: str
    name: str
    path: Path

    @property
    def marker(self) -> Path:
        return self.path / MARKERS[self.kind]

    @property
    def url(self) -> str:
        return f"{PAGES[self.kind]}/{self.name}"


def study_dir(root: Path, name: str, kind: str) -> Study:
    """The study of ``kind`` called ``name`` in ``root``.

    Raises:
        StudyNotFound: ``name`` is not a plain directory name of ``root``, or that directory is no such study.
    """
    try:
        path = index.directory(root, name)
    except index.RunNotFound:
        raise StudyNotFound(kind, name) from None
    study = Study(kind, name, path)
    if not study.marker.is_file():
        raise StudyNotFound(kind, name)
    return study


def find(root: Path) -> list[Study]:
    """Every study directly inside ``root`` (a directory with two markers counts once per kind)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        for kind, marker, _ in KINDS:
            if (path / marker).is_file():
                try:
                    found.append(study_dir(root, path.name, kind))
                except StudyNotFound:  # a name no URL can hold, or a symlink out of the folder
                    continue
    return found


def updated(*files: Path) -> float | None:
    """The newest modification time of ``files`` (epoch seconds), None when none exists."""
    times = [s[0] / 1e9 for s in (stamp(f) for f in files) if s is not None]
    return max(times) if times else None


def run_link(root: Path, study: str, relative: Any) -> str | None:
    """The nested name of the run at ``relative`` (a path inside study ``study``), or None when it is no run
    there (not yet, or a path that would leave the study)."""
    if not isinstance(relative, str) or not relative:
        return None
    name = index.NESTED.join([study, *Path(relative).parts])
    try:
        index.run_dir(root, name)
    except index.RunNotFound:
        return None
    return name


def read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object in ``path`` and None, or None and why it cannot be read (yet)."""
    try:
        body = json.loads(Path(path).read_text())
    except OSError as exc:
        return None, f"{Path(path).name} cannot be read: {exc.strerror or exc}"
    except ValueError as exc:
        return None, f"{Path(path).name} is not JSON (yet): {exc}"
    if not isinstance(body, dict):
        return None, f"{Path(path).name} does not hold a JSON object"
    return body, None


def number(value: Any) -> float | int | None:
    """``value`` when it is a finite number (never a bool), else None: what the pages may plot and print."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """``value`` as text (None stays None), cut to ``limit`` characters."""
    if value is None:
        return None
    value = value if isinstance(value, str) else json.dumps(value) if isinstance(value, list | dict) else str(value)
    return value if len(value) <= limit else value[:limit] + "…"


def texts(values: Any) -> list[str]:
    """A list of short texts (strategy names, seeds), empty for anything that is not a list."""
    return [text(v, 200) or "" for v in values] if isinstance(values, list) else []


def read_only(request: Request) -> Response | None:
    """The refusal of a write (resume, cancel) to a run inside a study, or None for any other request."""
    if request.method in SAFE_METHODS or not request.url.path.startswith("/api/runs/"):
        return None
    name = request.url.path.removeprefix("/api/runs/").split("/")[0]
    if index.NESTED not in name:
        return None
    message = (f"{name[:200]!r} is a run of a study: its command (lmtune tune, curve or active) resumes it with the "
               "study, so it is not resumed or cancelled from the studio")
    return JSONResponse({"error": {"message": message, "code": 409}}, status_code=409)

