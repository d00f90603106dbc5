"""The reference pass of preference training shared out over processes (``parallel.fill_shared``): two real
processes on gloo, forked from this one, each fill every other batch and end with every value."""

from dataclasses import dataclass

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from multiproc import free_port

from lmtune.distributed import World
from lmtune.train.parallel import fill_shared


@dataclass
class Item:
    n: int
    ref: float | None = None
    ref_kl: float | None = None


def _share(rank: int, port: int, items: int, batch: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        filled: list[int] = []

        def fill(part):
            for item in part:
                filled.append(item.n)
                item.ref, item.ref_kl = item.n * 0.5, -float(item.n)

        mine = [Item(i) for i in range(items)]
        fill_shared(mine, batch, fill, ("ref", "ref_kl"), World(rank, 2))
        results[rank] = (filled, [(item.ref, item.ref_kl) for item in mine])
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("items", [7, 8, 1])
def test_each_process_fills_every_other_batch_and_ends_with_all_values(items):
    batch = 2
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_share, args=(free_port(), items, batch, results), nprocs=2, start_method="fork")
        results = dict(results)
    batches = [list(range(i, min(i + batch, items))) for i in range(0, items, batch)]
    for rank in (0, 1):
        filled, values = results[rank]
        assert filled == [n for b in batches[rank::2] for n in b]  # only its own batches
        assert values == [(n * 0.5, -float(n)) for n in range(items)]  # and everyone's values


def test_one_process_fills_everything_itself():
    items = [Item(i) for i in range(3)]
    fill_shared(items, 2, lambda part: [setattr(item, "ref", 1.0) for item in part], ("ref",), World())
    assert [item.ref for item in items] == [1.0, 1.0, 1.0]
