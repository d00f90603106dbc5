"""Cleaning (``lmtune.data.clean``): exact duplicates after normalisation, the first kept, conflicts flagged."""

from lmtune.data.clean import dedup_exact
from lmtune.data.formats import load_examples

LABELS = ["negative", "neutral", "positive"]


def _examples(records, task="classification", labels=LABELS, fields=None):
    rows = [(f"f.jsonl:{i + 1}", r) for i, r in enumerate(records)]
    return load_examples(rows, fields or {}, task, labels)


def test_exact_dedup_keeps_first_and_flags_conflicts():
    exs = _examples([{"text": "Same  text", "label": "positive"}, {"text": "same text", "label": "negative"},
                     {"text": "other", "label": "neutral"}, {"text": "OTHER", "label": "neutral"}])
    kept, report = dedup_exact(exs)
    assert [e.source for e in kept] == ["f.jsonl:1", "f.jsonl:3"]
    assert report["exact_duplicates"] == 2 and report["conflicting_targets"] == 1
