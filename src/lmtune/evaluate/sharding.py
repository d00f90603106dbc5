"""Evaluation split across the processes of a run: each answers every N-th test example, the answers are
gathered back in test order, and the metrics are computed once over all of them.

Only tasks scored example by example are split (classification, generation, chat, regression): their metrics
are a function of the gathered predictions, so N processes report what one would. Perplexity and preference
accuracy are aggregates over batches of the whole split and are computed whole by every process. The
forgetting probes share out whole batches (perplexity) and questions (multiple choice) with :func:`in_order`.
"""

from __future__ import annotations

from typing import Any

from lmtune import distributed
from lmtune.evaluate import metrics
from lmtune.evaluate.systems import SystemResult, TaskSpec

#: Cost fields averaged over the processes, weighted by how many examples each answered.
MEANS = ("latency_s", "prompt_tokens_mean", "completion_tokens_mean")
#: Count fields added up over the processes.
COUNTS = ("truncated_prompts", "hit_token_cap")


def answered(answer, spec: TaskSpec, examples: list, encoded: list) -> SystemResult | None:
    """``answer(examples, encoded)`` (a system's result, or None where it does not apply) over all of
    ``examples``: with several processes each answers its :func:`share` and the parts are gathered in order."""
    world = distributed.world()
    if not splits(spec, len(examples), world):
        return answer(examples, encoded)
    mine = share(len(examples), world)
    part = answer([examples[i] for i in mine], [encoded[i] for i in mine] if encoded else [])
    return gather(part, mine, spec, len(examples))


def splits(spec: TaskSpec, n: int, world: distributed.World) -> bool:
    """Whether a test split of ``n`` examples is shared out: several processes, per-example scoring, and
    at least one example for each process."""
    return world.distributed and spec.kind.per_example and n >= world.size


def share(n: int, world: distributed.World) -> list[int]:
    """The test indices this process answers: every ``size``-th, starting at its rank."""
    return list(range(world.rank, n, world.size))


def in_order(mine: list, n: int, world: distributed.World) -> list:
    """What each process computed for its :func:`share` of ``n`` items, back in item order, on every process."""
    if not world.distributed:
        return mine
    import torch.distributed as dist

    everyone: list[Any] = [None] * world.size
    dist.all_gather_object(everyone, mine)
    items: list[Any] = [None] * n
    for rank, part in enumerate(everyone):
        items[rank::world.size] = part
    return items


def gather(part: SystemResult | None, indices: list[int], spec: TaskSpec, n: int) -> SystemResult | None:
    """Every process's part, merged in test order, on every process (None when the system did not apply)."""
    import torch.distributed as dist

    everyone: list[Any] = [None] * distributed.world().size
    mine = None if part is None else (indices, part.metrics, part.predictions)
    dist.all_gather_object(everyone, mine)
    if any(p is None for p in everyone):
        return None
    return merge(everyone, spec, n)


def merge(parts: list[tuple[list[int], dict[str, Any], list[dict]]], spec: TaskSpec, n: int) -> SystemResult:
    """One result from the processes' ``(indices, metrics, rows)``: rows in test order, metrics recomputed."""
    rows: list[dict | None] = [None] * n
    for indices, _, predictions in parts:
        for i, row in zip(indices, predictions, strict=True):
            rows[i] = row
    result = _scored([r["reference"] for r in rows], [r["prediction"] for r in rows], spec)
    sizes = [len(indices) for indices, _, _ in parts]
    for key in MEANS:
        values = [(m.get(key), k) for (_, m, _), k in zip(parts, sizes) if isinstance(m.get(key), (int, float))]
        if values:
            result[key] = sum(v * k for v, k in values) / sum(k for _, k in values)
    for key in COUNTS:
        if any(key in m for _, m, _ in parts):
            result[key] = sum(m.get(key, 0) for _, m, _ in parts)
    return SystemResult(result, rows)


def _scored(references: list[Any], predictions: list[Any], spec: TaskSpec) -> dict[str, Any]:
    """The task's metrics over all gathered predictions, as the systems compute them on one process."""
    kind = spec.kind
    if kind.numeric:
        return metrics.regression_metrics([float(r) for r in references], [float(p) for p in predictions])
    if kind.labelled:
        return metrics.classification_metrics([str(r) for r in references], [str(p) for p in predictions],
                                              spec.labels)
    return metrics.generation_metrics([str(r) for r in references], [str(p) for p in predictions])
