"""``python -m lmtune.cli`` in a real process that starts with torch, transformers and lmtune already imported.

Each new interpreter spends about 7 s of CPU importing torch, transformers and peft before lmtune reads its first
argument; the hostile-input tables start about 75 of them. Here a stdlib forkserver (``multiprocessing``) imports
those once, and every case is a process forked from it that runs ``lmtune.cli``'s ``__main__`` with its own
arguments, working directory, environment, stdin (``/dev/null``), stdout and stderr (files). What is checked is
still a separate process's exit status and output: an uncaught exception prints its traceback and exits 1, as
the interpreter does. The forkserver is single-threaded, so nothing the test process runs (servers, browsers,
torch's thread pools) is inherited.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# The libraries a command that reaches a model imports; every lmtune module is added to them (``_preload``).
LIBRARIES = ["torch", "transformers", "peft", "accelerate", "transformers.models.auto.modeling_auto"]
_CONTEXT = None


def _preload() -> list[str]:
    """What the forkserver imports once. By name, from its own ``sys.path`` (Python 3.11's forkserver does not
    take the tests' one), so only installed modules: the libraries, then lmtune's (its ``__main__`` runs)."""
    import pkgutil

    import lmtune

    ours = [m.name for m in pkgutil.walk_packages(lmtune.__path__, "lmtune.") if not m.name.endswith("__main__")]
    return [*LIBRARIES, *ours]


def _context():
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(_preload())
    return _CONTEXT


def run(args: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """``lmtune *args`` in ``cwd`` with exactly ``env``; the finished process, its output as text."""
    with tempfile.TemporaryDirectory(prefix="lmtune-cli-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        process = _context().Process(target=child, args=(args, str(cwd), env, str(out), str(err)))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(["lmtune", *args], timeout, out.read_text(), err.read_text())
        return subprocess.CompletedProcess(["lmtune", *args], process.exitcode, out.read_text(), err.read_text())


def child(args: list[str], cwd: str, env: dict, out: str, err: str) -> None:
    """In the forked process: the files as stdin/stdout/stderr, then ``python -m lmtune.cli`` (runpy)."""
    import runpy

    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    if env.get("OMP_NUM_THREADS", "").isdigit():  # the forkserver's torch read its own environment at import
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.argv = ["lmtune", *args]  # runpy puts the path of lmtune/cli/__main__.py first, as -m does
    runpy.run_module("lmtune.cli", run_name="__main__", alter_sys=True)
