"""Where a command writes: checked before any work starts, claimed only when the work can start.

Every command that writes (``train``, ``demo``, ``export``, ``data prepare``, ``predict``) checks its
output location first, so a mistyped ``--out`` fails in a second with one clear line instead of a
traceback after the model has loaded, and a failed command leaves nothing behind.

A *run directory* is recognised by its two marker files, :data:`lmtune.run_dir.MARKERS` (``recipe.yaml``
and ``manifest.json``), written the moment a run claims its directory. ``--overwrite`` (and ``lmtune
demo``, which overwrites its own run) deletes only a directory that has both markers, or one that
holds nothing but the ``data/`` of ``lmtune data prepare``, so ``--out /tmp`` or ``--out runs`` can
never wipe other people's files or other runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lmtune.errors import UserError
from lmtune.run_dir import DATA, DATA_REPORT, MARKERS, DataDir, RunDir


def check_dir_target(path: Path, option: str = "--out") -> None:
    """Fail unless ``path`` is, or can be created as, a directory this process may write in.

    Args:
        path: the directory a command will write.
        option: the flag that named it, for the message.

    Raises:
        UserError: ``path`` is a file, lies under a file, or its nearest existing folder is not writable.
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise UserError(f"is a file, not a directory; give a directory for {option}", source=str(path))
        _check_writable(path, option)
    except OSError as exc:  # a name too long, a broken mount: the path is unusable either way
        raise UserError(f"not a usable path ({exc.strerror}); choose another {option}", source=str(path)) from None


def check_file_target(path: Path, option: str = "--output") -> None:
    """Fail unless ``path`` is, or can be created as, a file this process may append to.

    Raises:
        UserError: ``path`` is a directory, lies under a file, or cannot be written.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise UserError(f"is a directory; give a file path for {option}", source=str(path))
        if path.exists():
            try:
                open(path, "a").close()  # appends nothing; only proves it can be appended to
            except OSError as exc:
                raise UserError(f"cannot write this file ({exc.strerror}); choose another {option}",
                                source=str(path)) from None
            return
        _check_writable(path.parent, option, source=path)
    except OSError as exc:
        raise UserError(f"not a usable path ({exc.strerror}); choose another {option}", source=str(path)) from None


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Everything :func:`claim_run_dir` would refuse, found before any work starts (nothing is touched).

    Raises:
        UserError: ``run_dir`` cannot be written, is a previous run and neither ``resume`` nor
            ``overwrite`` is given, or holds files that are not an lmtune run (never written into or deleted).
    """
    run_dir = Path(run_dir)
    check_dir_target(run_dir)
    if not _non_empty(run_dir):
        return
    if not _owned(run_dir):
        raise UserError("directory is not empty and is not an lmtune run (it has no "
                        f"{' and '.join(MARKERS)}), so it is neither resumed nor overwritten; choose a new "
                        "or empty directory with --out", source=str(run_dir))
    if not resume and not overwrite:
        raise UserError("run directory already exists; pass --resume to continue it, --overwrite to "
                        "replace it, or --out for a new one", source=str(run_dir))


def claim_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> Path | None:
    """Make ``run_dir`` ready for a run (emptied when overwriting) and return the first folder created.

    Returns:
        The outermost directory this call created (``run_dir`` or a missing parent of it), which a
        run that fails before training removes; None when ``run_dir`` existed before.
    """
    check_run_dir(run_dir, resume, overwrite)
    run_dir = Path(run_dir)
    if _non_empty(run_dir) and not resume:
        shutil.rmtree(run_dir)  # only reached with overwrite, for a directory _owned() recognised
        run_dir.mkdir()
        return None
    created = first_missing(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return created


def check_data_dir(target: Path) -> None:
    """``data prepare --out``: a new or empty directory, or the data of an earlier prepare (rewritten).

    Raises:
        UserError: ``target`` cannot be written, or holds other files (the user's own ``train.jsonl``
            among them, perhaps) that the splits would replace.
    """
    target = Path(target)
    check_dir_target(target)
    if _non_empty(target) and not DataDir(target).report.is_file():
        raise UserError(f"directory is not empty and has no {DATA_REPORT} from an earlier `lmtune data "
                        "prepare`; the splits would replace files in it: choose a new or empty directory "
                        "with --out", source=str(target))


def first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None if ``path`` exists)."""
    path = Path(path).absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


@contextlib.contextmanager
def removed_on_failure(created: Path | None, keep: Path | None = None) -> Iterator[None]:
    """Remove ``created`` (a folder this command made) if the block raises; None: remove nothing.

    With ``keep``, a file whose existence means work worth resuming was saved (a run's ``eval.json``),
    the folder stays once that file exists.
    """
    try:
        yield
    except BaseException:
        if created is not None and not (keep is not None and keep.exists()):
            shutil.rmtree(created, ignore_errors=True)
        raise


def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _owned(path: Path) -> bool:
    """A run, or only the ``data/`` that ``lmtune data prepare`` writes into a run's directory by default."""
    run = RunDir(path)
    if run.is_run:
        return True
    entries = list(path.iterdir())
    return [e.name for e in entries] == [DATA] and run.data.report.is_file()


def _check_writable(path: Path, option: str, source: Path | None = None) -> None:
    """Create and delete a probe file in the nearest existing folder of ``path`` (``os.access`` lies to root)."""
    where = str(source or path)
    base = path.absolute()
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise UserError(f"{base} is a file, so nothing can be created under it; choose another {option}",
                        source=where)
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".lmtune-probe-")
    except OSError as exc:
        raise UserError(f"cannot write in {base} ({exc.strerror}); choose another {option}", source=where) from None
    os.close(fd)
    os.unlink(probe)
