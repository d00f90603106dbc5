"""Metric logging (``lmtune.train.track``): ``metrics.jsonl`` holds what was learned, ``timing.jsonl`` beside it
what was measured."""

from tiny import method_model, train_examples, train_settings

from lmtune.train import loop
from lmtune.train.track import read_metrics


def test_each_train_log_line_has_its_timing_beside_it(tok, tmp_path):
    loop.train(method_model(tok), train_examples(tok), train_examples(tok, 4),
               train_settings(max_steps=4, log_every=2, eval_every=2), tmp_path, tok.pad_token_id, quiet=True)
    metrics, timing = read_metrics(tmp_path / "metrics.jsonl"), read_metrics(tmp_path / "timing.jsonl")
    assert all(set(m) == {"step", "epoch", "split", "loss", "lr"} for m in metrics if m["split"] == "train")
    assert [t["step"] for t in timing] == [m["step"] for m in metrics if m["split"] == "train"] == [2, 4]
    assert all(t["tokens_per_s"] > 0 and t["elapsed_s"] > 0 for t in timing)
