"""The training loop (``lmtune.train.loop``): a step moves only trainable weights, accumulation equals the larger
batch, validation stops a run early, and a seeded run repeats itself."""

import pytest
import torch
from tiny import method_model, train_examples, train_settings

from lmtune.train import loop
from lmtune.train.track import read_metrics


@pytest.mark.parametrize("method", ["lora", "full"])
def test_parameters_change_after_a_step_and_only_trainable_ones(tok, tmp_path, method):
    model = method_model(tok, method)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loop.train(model, train_examples(tok), [], train_settings(max_steps=1), tmp_path, tok.pad_token_id, quiet=True)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    if method == "lora":
        assert all("lora_" in n for n in trainable)
        assert any("lora_B" in n for n in changed)


def test_accumulated_gradients_equal_the_large_batch(tok):
    data = train_examples(tok, 8)
    acc = loop.make_accelerator("fp32")
    grads = []
    for micro in ([data], [data[0:2], data[2:4], data[4:6], data[6:8]]):
        model = method_model(tok)
        loop.accumulate_gradients(model, micro, tok.pad_token_id, acc)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)


def test_accumulation_4x2_matches_batch_8_over_steps(tok, tmp_path):
    data = train_examples(tok, 16)
    finals = []
    for bs, ga in ((8, 1), (2, 4)):
        model = method_model(tok)
        loop.train(model, data, [], train_settings(batch_size=bs, grad_accum=ga, max_steps=3), tmp_path / f"{bs}",
                   tok.pad_token_id, quiet=True)
        finals.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    for name in finals[0]:
        torch.testing.assert_close(finals[0][name], finals[1][name], atol=1e-5, rtol=1e-4)


def test_validation_and_early_stopping(tok, tmp_path):
    # A learning rate this large makes validation loss rise after the first evaluations.
    result = loop.train(method_model(tok), train_examples(tok), train_examples(tok, 4), train_settings(
        max_steps=40, eval_every=1, patience=2, learning_rate=5.0), tmp_path, tok.pad_token_id, quiet=True)
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    val = [m for m in metrics if m["split"] == "validation"]
    assert val and result.stopped_early and result.steps < 40
    assert result.best_val_loss == min(m["loss"] for m in val)


def _losses_of_a_run(tok, run_dir):
    loop.train(method_model(tok), train_examples(tok), [], train_settings(max_steps=12, learning_rate=3e-2), run_dir,
               tok.pad_token_id, quiet=True)
    return {m["step"]: m["loss"] for m in read_metrics(run_dir / "metrics.jsonl") if m["split"] == "train"}


def test_loss_falls(tok, tmp_path):
    runs = [_losses_of_a_run(tok, tmp_path / "x")]
    assert runs[0][12] < runs[0][1]


def test_seeded_runs_are_identical(tok, tmp_path):
    runs = [_losses_of_a_run(tok, tmp_path / name) for name in ("x", "y")]
    assert runs[0] == runs[1]
