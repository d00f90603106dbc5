"""What preference training shares over processes, in two real processes on gloo forked from this one: the
reference pass (``parallel.fill_shared``: each fills every other batch and ends with every value), KTO's z0
(the mean over every process's shard of the micro-batch, a stand-in batch left out), and the logged means of
DPO, KTO and GRPO (``WindowMeans``: summed over the processes, a stand-in batch left out)."""

from dataclasses import dataclass
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmtune.distributed import World, free_port
from lmtune.train.kto import _reference_point
from lmtune.train.objectives import standing_in
from lmtune.train.parallel import fill_shared
from lmtune.train.preference_losses import WindowMeans


@dataclass
class Item:
    n: int
    ref: float | None = None
    ref_kl: float | None = None


def _in_two_processes(work, *args) -> dict:
    """``work(rank, *args)`` in two forked processes of one gloo group; what each returned, by rank."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_joined, args=(free_port(), work, args, results), nprocs=2, start_method="fork")
        return dict(results)


def _joined(rank: int, port: int, work, args, results) -> None:
    env = {"RANK": str(rank), "WORLD_SIZE": "2"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        if dist.is_initialized():  # the worker's own group (an in-process DeepSpeed test's), copied by fork
            dist.destroy_process_group()
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                                timeout=timedelta(seconds=60))  # a process that skips a collective fails the test
        try:
            results[rank] = work(rank, *args)
        finally:
            dist.destroy_process_group()


def _fill(rank: int, items: int, batch: int):
    filled: list[int] = []

    def fill(part):
        for item in part:
            filled.append(item.n)
            item.ref, item.ref_kl = item.n * 0.5, -float(item.n)

    mine = [Item(i) for i in range(items)]
    fill_shared(mine, batch, fill, ("ref", "ref_kl"), World(rank, 2))
    return filled, [(item.ref, item.ref_kl) for item in mine]


@pytest.mark.parametrize("items", [7, 8, 1])
def test_each_process_fills_every_other_batch_and_ends_with_all_values(items):
    batch = 2
    results = _in_two_processes(_fill, items, batch)
    batches = [list(range(i, min(i + batch, items))) for i in range(0, items, batch)]
    for rank in (0, 1):
        filled, values = results[rank]
        assert filled == [n for b in batches[rank::2] for n in b]  # only its own batches
        assert values == [(n * 0.5, -float(n)) for n in range(items)]  # and everyone's values


def test_one_process_fills_everything_itself():
    items = [Item(i) for i in range(3)]
    fill_shared(items, 2, lambda part: [setattr(item, "ref", 1.0) for item in part], ("ref",), World())
    assert [item.ref for item in items] == [1.0, 1.0, 1.0]


def _z0(rank: int, stand_in_on_1: bool) -> float:
    policy = torch.tensor([[1.0, 2.0, 3.0], [7.0, 9.0, 11.0]][rank])
    with standing_in(stand_in_on_1 and rank == 1):
        return _reference_point(policy, torch.zeros(3)).item()


def test_kto_z0_is_the_mean_over_every_process_shard_and_a_stand_in_adds_nothing():
    assert _in_two_processes(_z0, False) == {0: pytest.approx(5.5), 1: pytest.approx(5.5)}  # (6 + 27) / 6
    assert _in_two_processes(_z0, True) == {0: pytest.approx(2.0), 1: pytest.approx(2.0)}  # rank 0's 3 alone
    assert _reference_point(torch.tensor([-1.0, -3.0]), torch.zeros(2)).item() == 0.0  # one process, clamped at 0


def _window(rank: int) -> dict:
    window = WindowMeans(("reward", "kl"))
    if rank == 0:
        window.add("reward", torch.tensor([1.0, 3.0]))
    with standing_in(True):  # rank 1 ran only a stand-in batch; rank 0 one too, after its real one
        window.add("reward", torch.tensor([50.0]))
    return window.read(World(rank, 2))


def test_the_logged_means_are_over_every_process_and_a_stand_in_adds_nothing():
    assert _in_two_processes(_window) == {0: {"reward": 2.0}, 1: {"reward": 2.0}}
