"""What the studio parsed or rendered from a run's files, kept until those files change.

A value is stored with the *stamps* (modification time and size) of the files it came from; a lookup
whose files have other stamps builds it again. A file being written changes its stamp, so a page never
shows a stale value for longer than one request, and a finished run's files are read once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any


def stamp(path: Path) -> tuple[int, int] | None:
    """``(mtime in ns, size)`` of ``path``; None when it does not exist (or cannot be read)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


class Stamped:
    """At most ``size`` values (least recently used dropped first), each valid while its files' stamps hold."""

    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict[Hashable, tuple[tuple, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, files: Iterable[Path], build: Callable[[], Any]) -> Any:
        """The value of ``key`` built from ``files``: the stored one if no file changed, else ``build()``."""
        stamps = tuple((str(p), stamp(p)) for p in files)
        with self._lock:
            hit = self._values.get(key)
            if hit is not None and hit[0] == stamps:
                self._values.move_to_end(key)
                return hit[1]
        value = build()  # outside the lock: requests for other runs go on meanwhile
        with self._lock:
            self._values[key] = (stamps, value)
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
