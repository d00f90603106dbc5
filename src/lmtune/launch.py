"""``lmtune train RECIPE --processes N``: start N training processes on this machine through torchrun's agent.

The processes are torchrun's (``torch.distributed.launcher.elastic_launch``, the code behind the
``torchrun`` command): one per GPU, or N on CPU with gloo, each running ``lmtune train`` without
``--processes``. If one process dies the agent stops the others at once (no restarts), and this
command says which one failed in one line. A recipe error is reported once, as the main process saw it.

For several machines, run ``torchrun --nnodes ... -m lmtune.cli train RECIPE`` on each (README,
"More than one GPU or machine").
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path

from lmtune.errors import UserError

#: Where a process writes the lines of the UserError that stopped it (read back by the launcher).
ERROR_DIR_ENV = "LMTUNE_ERROR_DIR"


def check_processes(n: int) -> None:
    """Refuse more processes than this machine has devices (GPUs), or cores without CUDA.

    Raises:
        UserError: naming ``--processes`` and what the machine has.
    """
    import torch

    if os.environ.get("WORLD_SIZE"):
        raise UserError("this lmtune train was itself started by a launcher (torchrun or accelerate launch); "
                        "leave out --processes", source="--processes")
    if torch.cuda.is_available():
        have, what = torch.cuda.device_count(), "GPUs"
    else:
        have, what = os.cpu_count() or 1, "CPU cores (no CUDA device)"
    if n > have:
        raise UserError(f"{n} processes asked, but this machine has {have} {what}; use --processes {have} or "
                        "fewer", source="--processes")


def launch(args: list[str], processes: int) -> int:
    """Run ``lmtune <args>`` in ``processes`` processes; return the exit code for this command.

    Returns:
        0 when every process finished, 2 when a process stopped on a user error (its lines are printed
        once), 1 when a process died otherwise (which one, and how, is printed), 130 when this command
        was interrupted.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed.elastic")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the agent's own log lines are not ours to print
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.5)
    with tempfile.TemporaryDirectory(prefix="lmtune-launch-") as errors:
        env = {ERROR_DIR_ENV: errors, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or
               str(max(1, (os.cpu_count() or 1) // processes))}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            elastic_launch(config, sys.executable)("-m", "lmtune.cli", *args)
            return 0
        except ChildFailedError as exc:
            return _report(exc, Path(errors))
        except SignalException as exc:  # Ctrl-C (or a kill) of this command: the agent stopped the processes
            print(f"\ninterrupted (signal {exc.sigval}); the training processes were stopped. Continue with --resume "
                  "from the newest checkpoint", file=sys.stderr)
            return 130
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def record_error(lines: list[str]) -> None:
    """In a launched process: leave the lines of the UserError that stopped it for the launcher."""
    where = os.environ.get(ERROR_DIR_ENV)
    if where and Path(where).is_dir():
        path = Path(where) / f"rank-{os.environ.get('RANK', '0')}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _report(exc, errors: Path) -> int:
    """Print why the processes stopped; the exit code of the command."""
    found = sorted(errors.glob("rank-*.txt"), key=lambda p: int(p.stem.split("-")[1]))
    if found:
        print(found[0].read_text(encoding="utf-8").rstrip("\n"), file=sys.stderr)
        return 2
    # The agent stops the other processes with SIGTERM once one fails: the cause is a failure that is not that.
    causes = {r: f for r, f in exc.failures.items() if f.exitcode != -signal.SIGTERM}
    rank, failure = min(causes.items()) if causes else exc.get_first_failure()
    how = (f"was killed by signal {-failure.exitcode}" if failure.exitcode < 0
           else f"exited with code {failure.exitcode}")
    print(f"error: --processes: training process {rank} {how}; the other processes were stopped. The newest "
          "checkpoint is kept: continue with --resume", file=sys.stderr)
    return 1
