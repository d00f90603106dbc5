"""What every hostile input must get: exit 2 (or HTTP 4xx), one ``error:`` line, no traceback, no stub.

Shared by the hostile-input tables (``test_hostile_*.py``). A CLI case runs ``python -m lmtune.cli`` as a
real process in ``cwd`` (forked with torch and transformers already imported: ``forked_cli``), so what is
checked is what a user sees: the exit code, stderr, and the files left behind.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import forked_cli


def cli(*args, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``lmtune`` with ``args`` in ``cwd``; return the finished process (text output)."""
    return forked_cli.run([str(a) for a in args], cwd, {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout)


def snapshot(root: Path) -> set[Path]:
    """Every path under ``root`` (to prove a failed command left nothing behind)."""
    return set(Path(root).rglob("*"))


def assert_user_error(proc: subprocess.CompletedProcess, words: str | None = None,
                      before: set[Path] | None = None, root: Path | None = None) -> str:
    """Exit 2, exactly one stderr line ``error: ...`` (containing ``words``), no traceback; return the line.

    With ``before`` (a ``snapshot(root)`` taken before the command), nothing new may exist under ``root``.
    """
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode == 2, f"exit {proc.returncode}\n{output}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, output
    if words is not None:
        assert words.lower() in errors[0].lower(), errors[0]
    if before is not None:
        left = sorted(str(p) for p in snapshot(root) - before)
        assert not left, f"left behind: {left}"
    return errors[0]


def assert_client_error(response, words: str | None = None) -> dict:
    """An HTTP 4xx with an OpenAI-style ``{"error": {"message": ...}}`` body and no traceback; return the error."""
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    assert "Traceback" not in response.text
    error = response.json()["error"]
    assert error["message"]
    if words is not None:
        assert words.lower() in error["message"].lower(), error["message"]
    return error
