"""``lmtune serve``: load the models, bind the port, run uvicorn until Ctrl-C.

The port is bound before any model loads, so a busy port fails in a second with a clear message;
a lock file keeps a second server off the same state directory (two job runners would run each
job twice). With ``engine="vllm"`` the machine and the runs are checked first (one line, before
anything loads), then vLLM's OpenAI server is started as a child (:mod:`lmtune.serve.vllm`) and
inference is routed to it; it stops when this server stops.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from filelock import FileLock, Timeout

from lmtune import assets, progress
from lmtune.errors import UserError
from lmtune.serve.http.app import build_state, create_app
from lmtune.serve.upstream import Upstream

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ENGINES = ("lmtune", "vllm")


def default_state_dir() -> Path:
    """``$LMTUNE_HOME/serve`` (``~/.cache/lmtune/serve``)."""
    return assets.cache_root() / "serve"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say TCP, and
    # with Nagle on each small response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port or stop the "
                        "program using it", source="--port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def lock_state_dir(state_dir: Path) -> FileLock:
    """Hold the state directory for this server, or fail naming the directory."""
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(state_dir / "server.lock"), thread_local=False)  # released by the serving thread
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError("another lmtune serve is using this state directory; stop it or give --state-dir",
                        source=str(state_dir)) from None
    return lock


def start_in_thread(run: Callable[[], None], server: uvicorn.Server, name: str, timeout: float) -> threading.Thread:
    """Call ``run`` (which runs ``server``) in a daemon thread; return it once ``server`` accepts requests."""
    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.05)
    return thread


def stop_thread(server: uvicorn.Server, thread: threading.Thread | None) -> None:
    """Shut ``server`` down as Ctrl-C would, and wait for its thread."""
    server.should_exit = True
    if thread is not None:
        thread.join(timeout=120)


class Server:
    """A configured server: ``run()`` in the foreground, or ``start()``/``stop()`` it in a thread.

    Args:
        refs: run directories and model references to serve.
        host / port: where to listen (port 0: a free port, see ``url``).
        state_dir: files, jobs and the job database.
        api_key: required as a bearer token on /v1 when set.
        max_batch / max_queue / default_max_tokens: batching and generation limits.
        precision: autocast for generation: auto (bf16 where native), fp32, bf16, fp16.
        quiet: no progress lines or access log.
        engine: ``lmtune`` (this process batches and generates) or ``vllm`` (a vLLM child server does).
        allow_python_graders: accept reinforcement jobs with python graders, whose code runs on this machine.
        upstream: answer inference requests with this server instead (what ``engine="vllm"`` sets up after
            starting vLLM; ``refs`` are then not loaded here).
    """

    def __init__(self, refs: list[str], host: str = "127.0.0.1", port: int = 8000, state_dir: Path | None = None,
                 api_key: str | None = None, max_batch: int = 32, max_queue: int = 256, default_max_tokens: int = 256,
                 precision: str = "auto", quiet: bool = False, engine: str = "lmtune",
                 upstream: Upstream | None = None, allow_python_graders: bool = False):
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}", source="--precision")
        plan = _vllm_plan(refs, engine, max_batch, max_queue, precision)
        self.say = functools.partial(progress.say, quiet=quiet)
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.sock = bind(host, port)
        self.lock = self.child = None
        try:
            self.lock = lock_state_dir(self.state_dir)
            if plan is not None:
                from lmtune.serve.vllm.process import start_vllm

                self.child, upstream = start_vllm(plan, self.state_dir, self.say)
            self.state = build_state(refs, self.state_dir, api_key, max_batch, max_queue, default_max_tokens, self.say,
                                     precision, upstream, allow_python_graders)
        except BaseException:
            self._release()
            raise
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(self.state), log_level="warning" if quiet else "info",
                                access_log=not quiet, timeout_graceful_shutdown=5)
        self.uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C): stops the job runner, checkpointing a running job."""
        self.say(f"serving {', '.join(self.state.names()) or 'no models yet'} at {self.url}/v1 "
                 f"(state in {self.state_dir})")
        try:
            self.uvicorn.run(sockets=[self.sock])
        finally:
            self._release()

    def start(self, timeout: float = 60) -> Server:
        """Serve in a background thread; return once it accepts requests."""
        self._thread = start_in_thread(self.run, self.uvicorn, "lmtune-serve", timeout)
        return self

    def stop(self) -> None:
        """Shut down as Ctrl-C would, and wait for it."""
        stop_thread(self.uvicorn, self._thread)

    def _release(self) -> None:
        self.sock.close()
        if self.child is not None:
            self.child.stop()
        if self.lock is not None:
            self.lock.release()


def _vllm_plan(refs: list[str], engine: str, max_batch: int, max_queue: int, precision: str):
    """For ``engine="vllm"``: the machine checked and the runs planned (:func:`lmtune.serve.vllm.plan.plan_vllm`).

    Raises:
        UserError: an unknown engine, a machine without vLLM or CUDA, runs vLLM cannot serve together, or
            options of lmtune's own engine given to vLLM (which batches on its own).
    """
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}; use {' or '.join(ENGINES)}", source="--engine")
    if engine == "lmtune":
        return None
    from lmtune.serve.vllm.plan import check_machine, plan_vllm

    for flag, value, default in (("--max-batch-size", max_batch, 32), ("--max-queue", max_queue, 256),
                                 ("--precision", precision, "auto")):
        if value != default:
            raise UserError("sets lmtune's own engine, not vLLM, which batches and picks its dtype on its own; leave "
                            "it out with --engine vllm", source=flag)
    check_machine()
    return plan_vllm(refs)


def serve(refs: list[str], **options) -> None:
    """Serve ``refs`` (run directories or model references) until interrupted; see :class:`Server`."""
    Server(refs, **options).run()
