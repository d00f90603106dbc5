"""The trackers a recipe can name in ``tracking:``, and the optional extra each one needs.

``jsonl`` (``metrics.jsonl`` and ``timing.jsonl``) is always written: the run directory, the report and
``--resume`` read it. The others are backends (:class:`~lmtune.train.trackers.base.Tracker`); a new
one is a class in this package and one entry in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from lmtune.train.trackers.base import Tracker
from lmtune.train.trackers.mlflow import MlflowTracker
from lmtune.train.trackers.tensorboard import TensorBoardTracker
from lmtune.train.trackers.trackio import TrackioTracker
from lmtune.train.trackers.wandb import WandbTracker

#: The always-written tracker: ``metrics.jsonl`` in the run directory (``lmtune.train.track``).
JSONL = "jsonl"
BACKENDS: dict[str, type[Tracker]] = {cls.name: cls for cls in (
    TensorBoardTracker, MlflowTracker, WandbTracker, TrackioTracker)}
#: Every name ``tracking:`` accepts.
NAMES: tuple[str, ...] = (JSONL, *BACKENDS)


def backends(names: Iterable[str]) -> list[type[Tracker]]:
    """The backend classes of ``names``, in order, each once (``jsonl`` has none: it is always written)."""
    return [BACKENDS[name] for name in dict.fromkeys(names) if name in BACKENDS]


def installed(cls: type[Tracker]) -> bool:
    """Whether the backend's library can be imported (looked up, not imported: this is quick)."""
    try:
        return importlib.util.find_spec(cls.module) is not None
    except (ImportError, ValueError):
        return False


def install_hint(cls: type[Tracker]) -> str:
    """``the mlflow tracker needs the mlflow package: pip install 'lmtune[mlflow]'``."""
    return f"the {cls.name} tracker needs the {cls.module} package: pip install 'lmtune[{cls.extra}]'"


def missing(names: Iterable[str]) -> list[type[Tracker]]:
    """The backends among ``names`` whose library is not installed."""
    return [cls for cls in backends(names) if not installed(cls)]
