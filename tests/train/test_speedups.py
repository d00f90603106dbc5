"""Speed switches (``lmtune.train.speedups``): activation checkpointing and ``torch.compile`` change how fast a
step runs, never what it computes; they are undone after training and refused, by key, where a model cannot
take them."""

import pytest
import torch
from tiny import build_model, build_tokenizer, method_model, train_examples, train_settings

from lmtune.data.encode import Encoder
from lmtune.methods import registry
from lmtune.train import loop
from lmtune.train.batches import collate
from lmtune.train.loss import target_loss_sum
from lmtune.train.track import read_metrics


def _lora_loss_and_grads(batch, vocab: int, switch=None):
    """Loss and LoRA gradients of one training-mode step on a fresh tiny LoRA model, with a speed switch."""
    from lmtune.train import speedups

    model = registry.get("lora").apply(build_model(vocab, seed=0), {"r": 2, "lora_dropout": 0.0}, {})
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    model.train()
    if switch == "gradient_checkpointing":
        speedups.enable_activation_checkpointing(model)
    elif switch == "compile":
        assert speedups.compile_layers(model) == 2
    loss = target_loss_sum(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    speedups.disable(model)
    return loss.detach(), grads


@pytest.mark.parametrize("switch", ["gradient_checkpointing", "compile"])
def test_speed_switches_give_the_plain_loss_and_gradients(switch):
    tok = build_tokenizer()
    enc = Encoder(tok, 64)
    examples = [enc.encode([{"role": "user", "content": t}], c) for t, c in
                [("the movie was great", "positive"), ("it was fine, nothing special at all", "neutral indeed")]]
    batch = collate(examples, tok.pad_token_id)
    plain_loss, plain_grads = _lora_loss_and_grads(batch, len(tok))
    loss, grads = _lora_loss_and_grads(batch, len(tok), switch)
    torch.testing.assert_close(loss, plain_loss, atol=1e-5, rtol=1e-5)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], atol=1e-5, rtol=1e-4)


def test_speed_switches_are_undone_after_training():
    from lmtune.train import speedups

    model = build_model(50)
    speedups.enable_activation_checkpointing(model)
    speedups.compile_layers(model)
    assert model.is_activation_checkpointing
    speedups.disable(model)
    assert not model.is_activation_checkpointing
    assert all(layer._compiled_call_impl is None for layer in model.model.layers)


def test_checking_the_switches_changes_nothing_and_names_each_one_a_model_cannot_take():
    from lmtune.errors import UserError
    from lmtune.train import speedups

    model = build_model(50)
    speedups.check(model, gradient_checkpointing=True, compile=True)  # the tiny Llama takes both
    assert not model.is_activation_checkpointing  # checking changes nothing
    plain = torch.nn.Sequential(torch.nn.Linear(4, 4))  # no checkpointing support, no decoder layers
    with pytest.raises(UserError) as caught:
        speedups.check(plain, gradient_checkpointing=True, compile=True)
    assert [source for source, _ in caught.value.problems] == ["training.gradient_checkpointing", "training.compile"]


def test_a_switch_a_model_cannot_take_is_a_user_error_naming_its_key():
    from lmtune.errors import UserError
    from lmtune.train import speedups

    plain = torch.nn.Sequential(torch.nn.Linear(4, 4))  # no checkpointing support, no decoder layers
    with pytest.raises(UserError, match="training.compile"):
        speedups.compile_layers(plain)
    with pytest.raises(UserError, match="training.gradient_checkpointing"):
        speedups.enable_activation_checkpointing(plain)


def _losses(run_dir):
    return {m["step"]: m["loss"] for m in read_metrics(run_dir / "metrics.jsonl") if m["split"] == "train"}


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
