"""Starting a server process for a benchmark: a free port, then wait until /health answers."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx2 as httpx


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, url: str, timeout: float) -> str:
    """Return ``url`` once ``url/health`` answers 200; exit with the server's stderr if it dies or hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: the server exited with code {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"error: the server did not start within {timeout:.0f} s")
