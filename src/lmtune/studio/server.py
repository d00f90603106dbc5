"""``lmtune studio``: check the options, bind the port, start the run queue, serve until Ctrl-C.

Binding anything but a loopback address needs a token (``--token`` or ``LMTUNE_STUDIO_TOKEN``): the
studio starts training runs and shows every record of the data. The port is bound before anything
else starts, so a busy port fails at once with one line; a lock keeps a second studio off the same
runs folder (two run queues would start each queued run twice).
"""

from __future__ import annotations

import functools
import secrets
import threading
from pathlib import Path

import uvicorn

from lmtune import progress
from lmtune.errors import UserError
from lmtune.serve.http.server import bind, lock_state_dir, start_in_thread, stop_thread
from lmtune.studio import security
from lmtune.studio.app import Studio, create_app
from lmtune.studio.queue import RunQueue


class StudioServer:
    """A configured studio: ``run()`` in the foreground, or ``start()``/``stop()`` it in a thread.

    Args:
        runs: the runs folder (created if missing).
        host / port: where to listen (port 0: a free one, see ``url``).
        token: required on every request; needed for a host other than loopback.
        recipes: the folder the New-run page lists recipes from (default: ``recipes/`` beside the runs
            folder when it exists).
        quiet: no access log.
    """

    def __init__(self, runs: Path, host: str = "127.0.0.1", port: int = 8700, token: str | None = None,
                 recipes: Path | None = None, quiet: bool = False):
        runs = Path(runs)
        if host not in security.LOOPBACK and not host.startswith("127.") and not token:
            raise UserError(f"binding {host} makes the studio reachable from other machines; give --token (or set "
                            f"LMTUNE_STUDIO_TOKEN), e.g. --token {secrets.token_urlsafe(16)}", source="--host")
        if runs.exists() and not runs.is_dir():
            raise UserError("is a file; give the folder that holds your runs", source=str(runs))
        if recipes is not None and not Path(recipes).is_dir():
            raise UserError("is not a folder of recipes", source=str(recipes))
        self.say = functools.partial(progress.say, quiet=quiet)
        self.sock = bind(host, port)
        self.lock = None
        try:
            runs.mkdir(parents=True, exist_ok=True)
            default_recipes = runs.resolve().parent / "recipes"
            self.studio = Studio(runs, recipes or (default_recipes if default_recipes.is_dir() else None),
                                 token=token, hosts=security.allowed_hosts(host))
            self.lock = lock_state_dir(self.studio.state_dir)
            self.studio.queue = RunQueue(self.studio.state_dir, runs, say=self.say)
        except BaseException:
            self._release()
            raise
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(self.studio), log_level="warning" if quiet else "info",
                                access_log=not quiet, timeout_graceful_shutdown=5)
        self.uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def link(self) -> str:
        """The address to open: with ``?token=`` when there is a token (the page then keeps it in a cookie)."""
        return self.url + (f"/?token={self.studio.token}" if self.studio.token else "/")

    def run(self) -> None:
        self.studio.queue.start()
        self.say(f"lmtune studio over {self.studio.runs} at {self.link}")
        try:
            self.uvicorn.run(sockets=[self.sock])
        finally:
            self._release()

    def start(self, timeout: float = 60) -> StudioServer:
        """Serve in a background thread; return once it accepts requests."""
        self._thread = start_in_thread(self.run, self.uvicorn, "lmtune-studio", timeout)
        return self

    def stop(self) -> None:
        stop_thread(self.uvicorn, self._thread)

    def _release(self) -> None:
        self.sock.close()
        queue = getattr(getattr(self, "studio", None), "queue", None)
        if queue is not None:
            queue.stop()
        if self.lock is not None:
            self.lock.release()
