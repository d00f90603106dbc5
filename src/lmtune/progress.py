"""What a command says while it works: stage messages (``say``) and progress bars (``bar``), on stderr.

stdout stays for results. tqdm redraws one line with carriage returns, which is unreadable in a log,
so it used to be disabled when stderr was not a terminal; a run under nohup or CI then said nothing
for many minutes. ``bar`` keeps tqdm for terminals and prints a short line every so often otherwise;
``say`` writes a message above a terminal's bar, never through it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Self

from tqdm.auto import tqdm

DEFAULT_INTERVAL = 30.0
INTERVAL_ENV = "LMTUNE_PROGRESS_INTERVAL"


def say(message: str, quiet: bool = False) -> None:
    """Write ``message`` as one line on stderr (stdout stays for results), unless ``quiet``.

    In a run of several processes only the main one (rank 0) speaks: the others do the same work.
    """
    if not quiet and not other_process():
        # sys.stderr is looked up now, not at import, so redirection (and pytest's capture) applies.
        tqdm.write(message, file=sys.stderr)
        sys.stderr.flush()


def bar(total: int, desc: str, unit: str, quiet: bool = False, initial: int = 0, interval: float | None = None,
        clock: Callable[[], float] = time.monotonic):
    """A progress bar for ``total`` items of ``unit``: tqdm on a terminal, else a ``PlainProgress``.

    ``interval`` is the least number of seconds between plain lines; left out, it is
    ``$LMTUNE_PROGRESS_INTERVAL`` or 30. ``quiet`` prints nothing either way. ``clock`` is for tests.
    """
    quiet = quiet or other_process()
    if quiet or sys.stderr.isatty():
        # Exactly the bar callers built before, so a terminal sees no change.
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, disable=quiet)
    if interval is None:
        try:
            interval = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL))
        except ValueError:  # a mistyped setting of a cosmetic knob must not stop a run
            interval = DEFAULT_INTERVAL
    return PlainProgress(total, desc, unit, initial, interval, clock)


def quiet_libraries() -> None:
    """No progress bars drawn by the libraries themselves (transformers' "Loading weights"): for ``--quiet``,
    and in every process but the main one."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While inside, what libraries print goes to stderr, from Python or from C and the compilers they start
    (DeepSpeed announces the ops it builds on stdout): stdout is then only the command's own output (``--json``)."""
    out = sys.stdout
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (a test's runner captures it)
        fd = None
    saved = None
    if fd is not None:
        out.flush()
        saved = os.dup(fd)
        os.dup2(sys.stderr.fileno(), fd)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)


def other_process() -> bool:
    """Whether this is a process of a multi-process run other than the main one (torchrun sets ``RANK``)."""
    return os.environ.get("RANK", "0") != "0"


class PlainProgress:
    """The part of tqdm's interface the callers use, printing ``desc: n/N unit (p%), rate, ETA`` lines."""

    def __init__(self, total: int, desc: str, unit: str, initial: int, interval: float,
                 clock: Callable[[], float]):
        self.total, self.desc, self.n, self.interval, self.clock = total, desc, initial, interval, clock
        # "ex" and "rec" read as abbreviations; only whole words get a plural.
        self.units = unit + "s" if len(unit) > 3 and not unit.endswith("s") else unit
        self.start_n = initial  # a resumed run's rate counts only the work done in this process
        self.started = self.last_print = clock()
        self.postfix: dict[str, object] = {}
        self.closed = False

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items; print a line if ``interval`` seconds passed since the last one."""
        self.n += n
        if self.clock() - self.last_print >= self.interval:
            self._print()

    def set_postfix(self, **values) -> None:
        """Values shown after the counts (e.g. ``loss=0.4321``); they appear on the next line printed."""
        self.postfix = values

    def close(self) -> None:
        """Print the final line once; later calls do nothing (callers close in ``finally`` too)."""
        if not self.closed:
            self.closed = True
            self._print()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def line(self) -> str:
        """The current progress line, without its newline."""
        elapsed = self.clock() - self.started
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.n}/{self.total} {self.units}"
                 + (f" ({100 * self.n // self.total}%)" if self.total else "")]
        parts.append(f"{rate:.1f} {self.units}/s" if rate < 10 else f"{rate:.0f} {self.units}/s")
        left = max(self.total - self.n, 0)
        parts.append("ETA " + (_duration(left / rate) if rate > 0 else ("0m00s" if not left else "?")))
        parts += [f"{key}={value}" for key, value in self.postfix.items()]
        return ", ".join(parts)

    def _print(self) -> None:
        # sys.stderr is looked up now, not at import, so redirection (and pytest's capture) applies.
        print(self.line(), file=sys.stderr, flush=True)
        self.last_print = self.clock()


def _duration(seconds: float) -> str:
    """``3m01s`` or ``1h02m03s``: short and unambiguous in a log line."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
