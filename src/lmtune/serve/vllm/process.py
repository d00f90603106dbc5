"""The vLLM server as a child of ``lmtune serve``: started, awaited, watched and stopped with it.

The child runs in a session of its own, so a Ctrl-C meant for lmtune reaches it only through
lmtune, which stops it (SIGTERM to its whole process group: vLLM's engine processes too; SIGKILL if it
has not exited after ``STOP_GRACE_S``). Its output goes to ``<state dir>/vllm.log``; lmtune says
where, shows progress while the model loads (vLLM answers ``/health`` once it can serve), and says
the log's last line when vLLM exits during start-up. After start-up a watcher thread notices if it
exits: the console says so and inference requests get a 503 naming the exit code.

:class:`ChildServer` knows nothing of vLLM beyond the command line: any server with a ``/health``
can be started this way (the tests start an ``lmtune serve``).
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx

from lmtune import progress
from lmtune.distributed import free_port
from lmtune.errors import UserError
from lmtune.serve.upstream import Upstream
from lmtune.serve.vllm.plan import VllmPlan

START_TIMEOUT_S = 1800  # a large model downloads and compiles on first start
STOP_GRACE_S = 30
PROGRESS_EVERY_S = 15


class ChildServer:
    """A server process lmtune starts and owns.

    Args:
        argv: its command line.
        url: where it will answer (``/health`` is polled there).
        log: the file its stdout and stderr go to.
        env: variables added to this process's environment (secrets go here, not in ``argv``).
        label: how messages name it.
        say: prints a progress line.
        on_exit: called with the reason when it exits on its own after start-up.
        warn: prints the line saying so (default: on stderr, even where progress lines are silenced).
    """

    def __init__(self, argv: list[str], url: str, log: Path, env: dict[str, str] | None = None, label: str = "vLLM",
                 say: Callable[[str], None] = lambda m: None, on_exit: Callable[[str], None] = lambda reason: None,
                 warn: Callable[[str], None] = progress.say):
        self.argv, self.url, self.log, self.env, self.label = argv, url, Path(log), env or {}, label
        self.say, self.on_exit, self.warn = say, on_exit, warn
        self.process: subprocess.Popen | None = None
        self._stopping = threading.Event()

    def start(self) -> ChildServer:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env={**os.environ, **self.env}, start_new_session=True)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S, what: str = "the model") -> None:
        """Return once ``/health`` answers 200; say progress meanwhile.

        Raises:
            UserError: the child exited first (its log's last line quoted), or ``timeout`` passed (it is stopped).
        """
        started = time.monotonic()
        said = started
        while not self._answers():
            code = self.process.poll()
            if code is not None:
                raise UserError(f"{self.label} exited while starting (exit code {code}): {last_line(self.log)} "
                                f"(its log: {self.log})", source=self.label)
            now = time.monotonic()
            if now - started > timeout:
                self.stop()
                raise UserError(f"{self.label} did not answer {self.url}/health within {timeout:g} s, so it was "
                                f"stopped; its log: {self.log}", source=self.label)
            if now - said >= PROGRESS_EVERY_S:
                self.say(f"waiting for {self.label} to load {what}: {now - started:.0f} s (its log: {self.log})")
                said = now
            time.sleep(0.5)
        threading.Thread(target=self._watch, name=f"{self.label}-watch", daemon=True).start()

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Stop the child and every process of its group; wait for it."""
        self._stopping.set()
        if self.process is None or self.process.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)  # its own session: the group id is its pid
        except ProcessLookupError:
            pass

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def _watch(self) -> None:
        code = self.process.wait()
        if self._stopping.is_set():
            return
        reason = f"{self.label} exited with code {code}: {last_line(self.log)}; its log: {self.log}"
        self.warn(f"error: {reason}; inference requests get 503 until lmtune serve is restarted")
        self.on_exit(reason)


def last_line(log: Path) -> str:
    """The last non-empty line of ``log`` (read from its last 8 KB), or a note that there is none."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    return lines[-1][:300] if lines else "it wrote nothing"


def start_vllm(plan: VllmPlan, state_dir: Path, say: Callable[[str], None],
               timeout: float = START_TIMEOUT_S) -> tuple[ChildServer, Upstream]:
    """Start vLLM's OpenAI server for ``plan`` on a free local port and wait until it serves.

    Returns the child (stop it with the server) and the :class:`Upstream` that routes requests to it;
    vLLM's API key is random, known only to the two of them.

    Raises:
        UserError: vLLM exited while starting, or did not answer within ``timeout``.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    key = secrets.token_urlsafe(24)
    upstream = Upstream(url, plan.model_map, api_key=key, label="vLLM", bases=plan.bases)
    argv = plan.command(port)
    for note in plan.notes:
        say(note)
    say(f"starting vLLM: {shlex.join(argv)}")
    child = ChildServer(argv, url, Path(state_dir) / "vllm.log", {"VLLM_API_KEY": key}, "vLLM", say,
                        upstream.mark_dead).start()
    try:
        child.wait_ready(timeout, plan.model)
    except BaseException:  # Ctrl-C while it loads too
        child.stop()
        raise
    say(f"vLLM serves {', '.join(plan.model_map)} at {url} (its log: {Path(state_dir) / 'vllm.log'})")
    return child, upstream
