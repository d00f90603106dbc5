"""Checkpoints (``lmtune.train.checkpoint``): complete, pruned, and resumed exactly, so that a resumed run logs
what the uninterrupted run logs, whatever stopped it and whichever version of lmtune wrote the checkpoint."""

import json

import pytest
from tiny import Killed, fail_in_step, method_model, train_examples, train_settings

from lmtune.train import loop
from lmtune.train.track import read_metrics


def _losses(run_dir):
    return {m["step"]: m["loss"] for m in read_metrics(run_dir / "metrics.jsonl") if m["split"] == "train"}


def _logged(run_dir) -> bytes:
    """``metrics.jsonl`` as written: what was learned, nothing measured (that goes to ``timing.jsonl``)."""
    return (run_dir / "metrics.jsonl").read_bytes()


def test_resume_after_interruption_reproduces_the_next_losses(tok, tmp_path, monkeypatch):
    data, val = train_examples(tok, 16), train_examples(tok, 4)
    settings = train_settings(max_steps=6, save_every=2, eval_every=2)
    loop.train(method_model(tok), data, val, settings, tmp_path / "a", tok.pad_token_id, quiet=True)
    expected = _losses(tmp_path / "a")

    restore = fail_in_step(monkeypatch, 4, KeyboardInterrupt)
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


def test_a_resumed_run_logs_exactly_what_the_uninterrupted_run_logs(tok, tmp_path, monkeypatch):
    # save_every (3) is not a multiple of log_every (2): the checkpoint at step 3 falls inside a log window.
    data, val = train_examples(tok, 16), train_examples(tok, 4)
    settings = train_settings(max_steps=8, save_every=3, log_every=2, eval_every=4, grad_accum=2, batch_size=2)
    expected = loop.train(method_model(tok), data, val, settings, tmp_path / "a", tok.pad_token_id, quiet=True)

    restore = fail_in_step(monkeypatch, 5, Killed)
    with pytest.raises(Killed):
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
    restore = fail_in_step(monkeypatch, 3, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        loop.train(method_model(tok), data, [], settings, tmp_path / "b", tok.pad_token_id, quiet=True)
    restore()
    resumed = loop.train(method_model(tok), data, [], settings, tmp_path / "b", tok.pad_token_id, resume=True,
                         quiet=True)
    assert _logged(tmp_path / "b") == _logged(tmp_path / "a")
    assert resumed.train_tokens == expected.train_tokens


# A checkpoint's state.json as every version of lmtune has written it (the old loop's plain state dict): a
# checkpoint an earlier version wrote must resume with this one, and one this version writes with an earlier one.
STATE_KEYS = ["step", "best_val_loss", "best_step", "bad_evals", "tokens", "seconds", "window_losses",
              "window_targets", "window_tokens", "window_seconds"]


def test_a_checkpoint_in_the_old_state_format_resumes_with_the_same_logs(tok, tmp_path, monkeypatch):
    data, val = train_examples(tok, 16), train_examples(tok, 4)
    settings = train_settings(max_steps=6, save_every=3, log_every=2, eval_every=2)
    expected = loop.train(method_model(tok), data, val, settings, tmp_path / "a", tok.pad_token_id, quiet=True)
    restore = fail_in_step(monkeypatch, 5, Killed)
    with pytest.raises(Killed):
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


def test_a_schedule_saved_with_one_optimizer_group_more_or_fewer_fits_this_run():
    """DeepSpeed drops the empty group that ddp and FSDP keep: a checkpoint continued under another strategy."""
    import torch

    from lmtune.errors import UserError
    from lmtune.train.checkpoint import _fit_groups

    def scheduler(groups):
        params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(groups)]
        optimizer = torch.optim.AdamW([{"params": [p]} for p in params], lr=0.01)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))

    for saved_groups, groups in ((1, 2), (2, 1)):
        before = scheduler(saved_groups)
        for _ in range(3):
            before.optimizer.step()
            before.step()
        after = scheduler(groups)
        after.load_state_dict(_fit_groups(before.state_dict(), groups))
        after.optimizer.step()
        after.step()
        before.optimizer.step()
        before.step()
        assert after.get_last_lr() == [before.get_last_lr()[0]] * groups
    mixed = {"base_lrs": [0.01, 0.02], "_last_lr": [0.01, 0.02], "lr_lambdas": [{}, {}], "last_epoch": 3}
    with pytest.raises(UserError) as refused:
        _fit_groups(mixed, 1)
    assert refused.value.source == "training.distributed.strategy"
