import json

import pytest
import torch
from tiny import build_tokenizer, method_model, train_examples, train_settings

from lmtune.train import loop
from lmtune.train.track import read_metrics


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


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


def _losses(run_dir):
    return {m["step"]: m["loss"] for m in read_metrics(run_dir / "metrics.jsonl") if m["split"] == "train"}


def _fail_in_step(monkeypatch, n: int, exc: type[BaseException]):
    """Make the ``n``-th optimizer step raise ``exc`` inside its backward pass; return a function that undoes it."""
    real, calls = loop.accumulate_gradients, {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "accumulate_gradients", failing)
    return lambda: monkeypatch.setattr(loop, "accumulate_gradients", real)


def test_resume_after_interruption_reproduces_the_next_losses(tok, tmp_path, monkeypatch):
    data, val = train_examples(tok, 16), train_examples(tok, 4)
    settings = train_settings(max_steps=6, save_every=2, eval_every=2)
    loop.train(method_model(tok), data, val, settings, tmp_path / "a", tok.pad_token_id, quiet=True)
    expected = _losses(tmp_path / "a")

    restore = _fail_in_step(monkeypatch, 4, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        loop.train(method_model(tok), data, val, settings, tmp_path / "b", tok.pad_token_id, quiet=True)
    assert (tmp_path / "b" / "checkpoints" / "step-3" / "state.json").exists()
    restore()
    # A fresh model with different initial weights: everything must come from the checkpoint.
    loop.train(method_model(tok, seed=99), data, val, settings, tmp_path / "b", tok.pad_token_id, resume=True,
               quiet=True)
    resumed = _losses(tmp_path / "b")
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6)


def test_checkpoints_are_complete_and_pruned(tok, tmp_path):
    settings = train_settings(max_steps=6, save_every=2, keep_checkpoints=2)
    loop.train(method_model(tok), train_examples(tok), [], settings, tmp_path, tok.pad_token_id, quiet=True)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-4", "step-6"]
    state = json.loads((tmp_path / "checkpoints" / "step-6" / "state.json").read_text())
    assert state["step"] == 6
    assert not list(tmp_path.rglob("*.tmp"))


def test_validation_and_early_stopping(tok, tmp_path):
    # A learning rate this large makes validation loss rise after the first evaluations.
    result = loop.train(method_model(tok), train_examples(tok), train_examples(tok, 4), train_settings(
        max_steps=40, eval_every=1, patience=2, learning_rate=5.0), tmp_path, tok.pad_token_id, quiet=True)
    metrics = read_metrics(tmp_path / "metrics.jsonl")
    val = [m for m in metrics if m["split"] == "validation"]
    assert val and result.stopped_early and result.steps < 40
    assert result.best_val_loss == min(m["loss"] for m in val)


def test_loss_falls_and_seeded_runs_are_identical(tok, tmp_path):
    data = train_examples(tok)
    runs = []
    for name in ("x", "y"):
        loop.train(method_model(tok), data, [], train_settings(max_steps=12, learning_rate=3e-2), tmp_path / name,
                   tok.pad_token_id, quiet=True)
        runs.append(_losses(tmp_path / name))
    assert runs[0] == runs[1]
    assert runs[0][12] < runs[0][1]


def test_merged_adapter_gives_the_same_logits_and_unmerges(tok):
    from lmtune.methods.merge import merged_adapter

    model = method_model(tok)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    ids = torch.tensor([train_examples(tok, 1)[0].input_ids])
    with torch.no_grad():
        before = model(input_ids=ids).logits
        with merged_adapter(model):
            merged = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
    torch.testing.assert_close(merged, before, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_run_logs_the_plain_losses(tok, tmp_path):
    data = train_examples(tok)
    for name, ckpt in (("plain", False), ("ckpt", True)):
        model = method_model(tok)
        loop.train(model, data, [], train_settings(max_steps=3, gradient_checkpointing=ckpt), tmp_path / name,
                   tok.pad_token_id, quiet=True)
        assert not model.get_base_model().is_activation_checkpointing  # undone for evaluation
    plain, ckpt = _losses(tmp_path / "plain"), _losses(tmp_path / "ckpt")
    assert plain.keys() == ckpt.keys()
    for step in plain:
        assert ckpt[step] == pytest.approx(plain[step], abs=1e-5)


def _logged(run_dir) -> bytes:
    """``metrics.jsonl`` as written: what was learned, nothing measured (that goes to ``timing.jsonl``)."""
    return (run_dir / "metrics.jsonl").read_bytes()


def test_each_train_log_line_has_its_timing_beside_it(tok, tmp_path):
    loop.train(method_model(tok), train_examples(tok), train_examples(tok, 4),
               train_settings(max_steps=4, log_every=2, eval_every=2), tmp_path, tok.pad_token_id, quiet=True)
    metrics, timing = read_metrics(tmp_path / "metrics.jsonl"), read_metrics(tmp_path / "timing.jsonl")
    assert all(set(m) == {"step", "epoch", "split", "loss", "lr"} for m in metrics if m["split"] == "train")
    assert [t["step"] for t in timing] == [m["step"] for m in metrics if m["split"] == "train"] == [2, 4]
    assert all(t["tokens_per_s"] > 0 and t["elapsed_s"] > 0 for t in timing)


class _Killed(Exception):
    """Stands for kill -9: nothing in the loop catches it, so no checkpoint is written on the way out."""


def test_a_resumed_run_logs_exactly_what_the_uninterrupted_run_logs(tok, tmp_path, monkeypatch):
    # save_every (3) is not a multiple of log_every (2): the checkpoint at step 3 falls inside a log window.
    data, val = train_examples(tok, 16), train_examples(tok, 4)
    settings = train_settings(max_steps=8, save_every=3, log_every=2, eval_every=4, grad_accum=2, batch_size=2)
    expected = loop.train(method_model(tok), data, val, settings, tmp_path / "a", tok.pad_token_id, quiet=True)

    restore = _fail_in_step(monkeypatch, 5, _Killed)
    with pytest.raises(_Killed):
        loop.train(method_model(tok), data, val, settings, tmp_path / "b", tok.pad_token_id, quiet=True)
    restore()
    resumed = loop.train(method_model(tok, seed=99), data, val, settings, tmp_path / "b", tok.pad_token_id, resume=True,
                         quiet=True)
    assert _logged(tmp_path / "b") == _logged(tmp_path / "a")
    assert resumed.train_tokens == expected.train_tokens > 0
    assert resumed.steps == expected.steps == 8


def test_interrupted_run_with_ctrl_c_resumes_with_the_same_logs(tok, tmp_path, monkeypatch):
    data = train_examples(tok, 16)
    settings = train_settings(max_steps=6, save_every=4, log_every=4)
    expected = loop.train(method_model(tok), data, [], settings, tmp_path / "a", tok.pad_token_id, quiet=True)
    restore = _fail_in_step(monkeypatch, 3, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        loop.train(method_model(tok), data, [], settings, tmp_path / "b", tok.pad_token_id, quiet=True)
    restore()
    resumed = loop.train(method_model(tok), data, [], settings, tmp_path / "b", tok.pad_token_id, resume=True,
                         quiet=True)
    assert _logged(tmp_path / "b") == _logged(tmp_path / "a")
    assert resumed.train_tokens == expected.train_tokens


def test_two_runs_of_one_recipe_and_seed_are_identical_bit_for_bit(recipe_file, tmp_path):
    from safetensors.torch import load_file

    from lmtune.lifecycle import run_recipe
    from lmtune.recipe import load_recipe

    # Dropout on, so the loop's own random draws are compared too; nothing seeds torch before run_recipe.
    path = recipe_file(method={"name": "lora", "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1}},
                       training={"max_steps": 5, "log_every": 1, "eval_every": 2},
                       eval={"systems": ["finetuned"]})
    runs = []
    for name in ("one", "two"):
        torch.manual_seed(len(runs) + 123)  # whatever state the global generator is in before the run
        run_dir = run_recipe(load_recipe(path, []), tmp_path / name, quiet=True)
        weights = load_file(str(run_dir / "final" / "adapter_model.safetensors"))
        runs.append((_logged(run_dir), weights))
    (logs_a, weights_a), (logs_b, weights_b) = runs
    assert logs_a.count(b"\n") >= 5 and logs_a == logs_b
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name


# A checkpoint's state.json as every version of lmtune has written it (the old loop's plain state dict): a
# checkpoint an earlier version wrote must resume with this one, and one this version writes with an earlier one.
STATE_KEYS = ["step", "best_val_loss", "best_step", "bad_evals", "tokens", "seconds", "window_losses",
              "window_targets", "window_tokens", "window_seconds"]


def test_a_checkpoint_in_the_old_state_format_resumes_with_the_same_logs(tok, tmp_path, monkeypatch):
    data, val = train_examples(tok, 16), train_examples(tok, 4)
    settings = train_settings(max_steps=6, save_every=3, log_every=2, eval_every=2)
    expected = loop.train(method_model(tok), data, val, settings, tmp_path / "a", tok.pad_token_id, quiet=True)
    restore = _fail_in_step(monkeypatch, 5, _Killed)
    with pytest.raises(_Killed):
        loop.train(method_model(tok), data, val, settings, tmp_path / "b", tok.pad_token_id, quiet=True)
    restore()
    path = tmp_path / "b" / "checkpoints" / "step-3" / "state.json"
    saved = json.loads(path.read_text())
    assert list(saved) == STATE_KEYS and saved["step"] == 3 and saved["window_losses"]
    # Written back as the old loop wrote its dict: these keys only, json.dumps(state, indent=2).
    path.write_text(json.dumps({key: saved[key] for key in STATE_KEYS}, indent=2))
    resumed = loop.train(method_model(tok, seed=99), data, val, settings, tmp_path / "b", tok.pad_token_id, resume=True,
                         quiet=True)
    assert _logged(tmp_path / "b") == _logged(tmp_path / "a")
    assert (resumed.train_tokens, resumed.best_step, resumed.best_val_loss) == (
        expected.train_tokens, expected.best_step, expected.best_val_loss)


def test_the_loop_state_reads_and_writes_the_old_dict():
    old = {"step": 7, "best_val_loss": 1.25, "best_step": 4, "bad_evals": 1, "tokens": 900, "seconds": 3.5,
           "window_losses": [2.5, 3.0], "window_targets": 12, "window_tokens": 80, "window_seconds": 0.25}
    state = loop.TrainState.from_dict(old)
    assert (state.step, state.best_step, state.tokens, state.window_losses) == (7, 4, 900, [2.5, 3.0])
    assert state.to_dict() == old and list(state.to_dict()) == STATE_KEYS
    # A checkpoint from before the log window was saved: the window starts empty, as the old loop's defaults did.
    early = loop.TrainState.from_dict({k: old[k] for k in STATE_KEYS[:6]})
    assert (early.step, early.window_losses, early.window_targets, early.window_seconds) == (7, [], 0, 0.0)
