"""Evaluation shared out across processes (``lmtune.evaluate.sharding``): shares cover the test split once, and
the merged result is what one process computes over all rows."""

from lmtune.distributed import World
from lmtune.evaluate import metrics, sharding
from lmtune.evaluate.systems import TaskSpec

LABELS = ["negative", "neutral", "positive"]


def test_the_shares_of_all_processes_cover_the_test_split_once():
    shares = [sharding.share(11, World(rank, 3)) for rank in range(3)]
    assert sorted(i for s in shares for i in s) == list(range(11))
    assert [len(s) for s in shares] == [4, 4, 3]


def test_a_split_is_shared_only_for_per_example_tasks_with_an_example_for_each_process():
    two = World(0, 2)
    assert sharding.splits(TaskSpec("classification", LABELS, None), 10, two)
    assert not sharding.splits(TaskSpec("language_modeling", None, None), 10, two)
    assert not sharding.splits(TaskSpec("classification", LABELS, None), 1, two)
    assert not sharding.splits(TaskSpec("classification", LABELS, None), 10, World())


def test_merged_parts_give_the_rows_in_order_and_the_metrics_of_one_process():
    refs = ["negative", "neutral", "positive", "positive", "negative", "neutral", "positive"]
    preds = ["negative", "positive", "positive", "neutral", "negative", "neutral", "negative"]
    rows = [{"input": f"x{i}", "reference": r, "prediction": p} for i, (r, p) in enumerate(zip(refs, preds))]
    parts = []
    for rank, (latency, tokens) in enumerate([(0.5, 10.0), (1.0, 20.0)]):
        mine = sharding.share(len(rows), World(rank, 2))
        parts.append((mine, {"latency_s": latency, "prompt_tokens_mean": tokens, "truncated_prompts": rank},
                      [rows[i] for i in mine]))
    merged = sharding.merge(parts, TaskSpec("classification", LABELS, None), len(rows))
    assert merged.predictions == rows
    expected = metrics.classification_metrics(refs, preds, LABELS)
    assert {k: merged.metrics[k] for k in expected} == expected
    assert merged.metrics["latency_s"] == (0.5 * 4 + 1.0 * 3) / 7
    assert merged.metrics["prompt_tokens_mean"] == (10.0 * 4 + 20.0 * 3) / 7
    assert merged.metrics["truncated_prompts"] == 1
