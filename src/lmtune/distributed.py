"""The processes of one run: who is who, and the few collective steps the lifecycle needs.

A run started by ``torchrun`` or ``accelerate launch`` (or by ``lmtune train --processes N``, which
starts torchrun) has one process per device. Every process reads the recipe, prepares the same data
(it is seeded) and loads the model; the training loop gives each one its shard of every optimizer
step (:mod:`lmtune.train.loop`). Only the main process (global rank 0) writes the run directory; the
others write only their own random-number state into each checkpoint. Multi-node runs need the run
directory on a file system every node sees, as with any accelerate or DeepSpeed run.

The process group comes from accelerate (``PartialState``): gloo on CPU, NCCL on CUDA. On a machine
without CUDA, processes are started with ``cpu=True``, or each would think it is alone and write the
same directory as rank 0.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from lmtune import progress
from lmtune.errors import UserError

#: How long a collective step waits for the other processes before the run stops with an error
#: (a process that died leaves the others waiting on it). ``$LMTUNE_DIST_TIMEOUT_S`` overrides it.
DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes the run directory and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's rank and the world size, as the launcher set them (torchrun's environment variables)."""
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def timeout() -> timedelta:
    """How long a collective step waits for the others (:data:`DEFAULT_TIMEOUT_S`, or ``$LMTUNE_DIST_TIMEOUT_S``)."""
    return timedelta(seconds=float(os.environ.get("LMTUNE_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))


def init() -> World:
    """Join the run's process group (once; nothing for a single process) and return this process's place.

    Raises:
        UserError: ``accelerate launch --cpu --num_processes N`` started this process alone (accelerate
            starts one process on CPU whatever N says).
    """
    here = world()
    if not here.distributed:
        _refuse_single_cpu_launch()
        return here
    import torch
    import torch.distributed as dist

    _stop_with_launcher()
    if not here.main:  # the main process shows what loading looks like; the others load the same
        progress.quiet_libraries()
    if not dist.is_initialized():
        from accelerate import PartialState
        from accelerate.utils import InitProcessGroupKwargs

        cpu = not torch.cuda.is_available()
        PartialState(cpu=cpu, **InitProcessGroupKwargs(timeout=timeout()).to_kwargs())
    return here


def _stop_with_launcher() -> None:
    """A process started by torchrun's agent is killed when the agent dies.

    The agent starts each process in a session of its own. When it stops normally, or on Ctrl-C, it stops them.
    But if it is SIGKILLed (``kill -9`` of ``lmtune train --processes N``, the OOM killer, a job server's
    hard stop), nothing stops them: they would train on and write the run directory while ``--resume``
    continues it. Linux's parent-death signal ends them with their agent; one whose agent died before it got
    here was handed to init (pid 1) and stops at once.
    """
    if not os.environ.get("TORCHELASTIC_RUN_ID") or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() == 1:  # it died before the signal was asked for
        os.kill(os.getpid(), signal.SIGKILL)


def uses_cpu() -> bool:
    """Whether the processes run on CPU (no CUDA here): accelerate must be told, see the module docstring."""
    import torch

    return not torch.cuda.is_available()


def barrier() -> None:
    """Wait until every process reaches this point (nothing for a single process)."""
    if world().distributed:
        import torch.distributed as dist

        dist.barrier()


def _refuse_single_cpu_launch() -> None:
    """``accelerate launch --cpu --num_processes N`` runs ONE process with N ignored: say so instead of
    training alone while the user believes N processes share the work."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("true", "1"):
        return
    asked = _launcher_processes()
    if asked and asked > 1:
        raise UserError(f"accelerate launch --cpu starts one process, not the {asked} asked for; on CPU use "
                        f"'lmtune train RECIPE --processes {asked}' or 'torchrun --nproc_per_node {asked} "
                        "-m lmtune.cli train RECIPE'", source="--num_processes")


def _launcher_processes() -> int | None:
    """``--num_processes`` of the ``accelerate launch`` that started this process, if it was one."""
    try:
        args = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if not any(a.endswith("accelerate") or a == "launch" for a in args):
        return None
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--num_processes=") else (
            args[i + 1] if arg == "--num_processes" and i + 1 < len(args) else None)
        if value is not None and value.isdigit():
            return int(value)
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now: a lone process's rendezvous, a launcher's, a child server's (it binds the
    port a moment later)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
