import math

import pytest
import torch
import torch.nn.functional as F
from tiny import build_model

from lmtune.data.encode import IGNORE, Encoder
from lmtune.errors import UserError
from lmtune.methods import registry
from lmtune.train.loop import Settings, train
from lmtune.train.objectives import evaluate_loss
from lmtune.train.preference import (
    PreferenceObjective,
    _full_logits_logps,
    encode_pair,
    precompute_reference,
    preference_metrics,
    reference_logps,
    sequence_logps,
)

PAIRS = [("the movie was great and i loved it", "positive", "negative"),
         ("the movie was terrible and boring", "negative", "positive"),
         ("this drug helped my pain a lot", "positive", "negative indeed"),
         ("this drug gave me awful side effects", "negative", "positive, it was great"),
         ("it was fine, nothing special", "neutral", "positive"),
         ("classify the text as positive or negative", "you are a helpful assistant", "nothing")]


def _pairs(tok, max_length=64):
    enc = Encoder(tok, max_length)
    return [encode_pair(enc, [{"role": "user", "content": p}], c, r) for p, c, r in PAIRS]


def _lora(tok, randomise=False):
    model = registry.get("lora").apply(build_model(len(tok), seed=0), {"r": 4, "lora_dropout": 0.0}, {})
    if randomise:
        torch.manual_seed(1)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.2)
    return model


def test_encode_pair_ends_completions_with_eos_and_masks_the_prompt(tok):
    enc = Encoder(tok, 64)
    messages = [{"role": "user", "content": "the movie was great"}]
    pair = encode_pair(enc, messages, "positive", "negative")
    assert pair.prompt_ids == enc.prompt_ids(messages)
    assert pair.chosen_ids == enc.target_ids("positive") and pair.rejected_ids == enc.target_ids("negative")
    assert pair.chosen_ids[-1] == pair.rejected_ids[-1] == tok.eos_token_id
    assert not pair.truncated and pair.ref_chosen is None

    batch = PreferenceObjective().collate([pair, _pairs(tok)[3]], tok.pad_token_id)
    n = len(pair.prompt_ids)
    assert batch["input_ids"].shape[0] == 4  # chosen rows, then rejected rows
    assert batch["input_ids"][0, n:n + len(pair.chosen_ids)].tolist() == pair.chosen_ids
    assert batch["input_ids"][2, n:n + len(pair.rejected_ids)].tolist() == pair.rejected_ids
    assert (batch["labels"][0, :n] == IGNORE).all() and (batch["labels"][2, :n] == IGNORE).all()
    assert batch["labels"][0, n:].tolist() == pair.chosen_ids + [IGNORE] * (batch["labels"].shape[1] - n - 2)
    assert ((batch["labels"] != IGNORE) <= (batch["attention_mask"] == 1)).all()  # no labels on padding
    assert "reference_logps" not in batch

    # Truncation as in supervised training; both sequences keep one prompt and fit max_length.
    short = Encoder(tok, 12)
    cut = encode_pair(short, [{"role": "user", "content": "this drug gave me awful side effects and the movie "
                                                          "was terrible and boring"}],
                      "positive", "negative, the movie was terrible and boring")
    assert cut.truncated
    assert len(cut.prompt_ids) + len(cut.chosen_ids) <= 12 and len(cut.prompt_ids) + len(cut.rejected_ids) <= 12
    assert cut.chosen_ids[-1] == tok.eos_token_id  # the short completion survives whole
    assert PreferenceObjective().length(cut) == 2 * len(cut.prompt_ids) + len(cut.chosen_ids) + len(cut.rejected_ids)
    assert PreferenceObjective().units(cut) == 1


def test_at_initialisation_each_pair_costs_log_2_and_the_disabled_adapter_is_the_reference(tok):
    model = _lora(tok)  # LoRA B = 0: policy == base model
    pairs = _pairs(tok)
    objective = PreferenceObjective(beta=0.5)
    batch = objective.collate(pairs, tok.pad_token_id)
    adapter_ref = reference_logps(model, batch)
    precompute_reference(model, pairs, batch_size=4, pad_id=tok.pad_token_id)
    precomputed = objective.collate(pairs, tok.pad_token_id)["reference_logps"]
    torch.testing.assert_close(adapter_ref, precomputed, atol=1e-5, rtol=1e-5)
    assert (precomputed < 0).all()
    for pair in pairs:  # per pair, not only in sum
        one = objective.collate([pair], tok.pad_token_id)
        assert objective.loss_sum(model, one).item() == pytest.approx(math.log(2), abs=1e-6)

    # After the adapter moves, disabling it still gives the initial model's log-probs.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.2)
    torch.testing.assert_close(reference_logps(model, batch), precomputed, atol=1e-5, rtol=1e-5)
    assert (sequence_logps(model, batch) - precomputed).abs().max() > 1e-2


def test_loss_and_gradients_equal_a_hand_computation_from_full_logits(tok):
    beta = 0.5
    pairs = _pairs(tok)
    model = _lora(tok, randomise=True)
    model.train()
    objective = PreferenceObjective(beta)
    batch = objective.collate(pairs, tok.pad_token_id)
    loss = objective.loss_sum(model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    base = build_model(len(tok), seed=0).eval()  # an independent copy of the reference weights

    def logp(m, prompt, completion):
        ids = torch.tensor([prompt + completion])
        logprobs = m(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
        positions = torch.arange(len(prompt) - 1, ids.shape[1] - 1)
        return logprobs[positions, ids[0, len(prompt):]].sum()

    expected, rows = 0.0, []
    for p in pairs:
        pc, pr = logp(model, p.prompt_ids, p.chosen_ids), logp(model, p.prompt_ids, p.rejected_ids)
        with torch.no_grad():
            rc, rr = logp(base, p.prompt_ids, p.chosen_ids), logp(base, p.prompt_ids, p.rejected_ids)
        expected = expected - F.logsigmoid(beta * ((pc - rc) - (pr - rr)))
        rows.append([pc.item(), pr.item(), rc.item(), rr.item()])
    expected.backward()
    torch.testing.assert_close(loss.detach(), expected.detach(), atol=1e-5, rtol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, dict(model.named_parameters())[name].grad, atol=1e-5, rtol=1e-4)

    # Evaluation metrics from the same numbers (TRL's definitions: rewards beta * (policy - reference)).
    pc, pr, rc, rr = torch.tensor(rows).T
    chosen_reward, rejected_reward = beta * (pc - rc), beta * (pr - rr)
    metrics = preference_metrics(model, pairs, beta, batch_size=4, pad_id=tok.pad_token_id)
    assert metrics["n"] == len(pairs)
    assert metrics["dpo_loss"] == pytest.approx(expected.item() / len(pairs), abs=1e-5)
    assert metrics["chosen_reward"] == pytest.approx(chosen_reward.mean().item(), abs=1e-5)
    assert metrics["rejected_reward"] == pytest.approx(rejected_reward.mean().item(), abs=1e-5)
    assert metrics["reward_margin"] == pytest.approx((chosen_reward - rejected_reward).mean().item(), abs=1e-5)
    assert metrics["reward_accuracy"] == (chosen_reward > rejected_reward).float().mean().item()
    assert metrics["logp_accuracy"] == (pc > pr).float().mean().item()
    assert 0 < metrics["reward_accuracy"] < 1  # the random adapter ranks some pairs right, some wrong

    # The chunked output layer and the full-logits fallback give the same per-row sums.
    with torch.no_grad():
        torch.testing.assert_close(sequence_logps(model, batch, chunk=3), _full_logits_logps(model, batch),
                                   atol=1e-5, rtol=1e-5)


def test_a_few_lora_steps_raise_reward_accuracy_and_change_only_lora_weights(tok, tmp_path):
    pairs = _pairs(tok)
    model = _lora(tok)
    beta = 0.5
    before = preference_metrics(model, pairs, beta, batch_size=4, pad_id=tok.pad_token_id)
    assert before["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert before["dpo_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert before["n"] == len(pairs)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}

    settings = Settings(learning_rate=2e-2, batch_size=len(pairs), max_steps=12, warmup_ratio=0.0,
                        eval_every=None, log_every=4, seed=0, group_by_length=False)
    train(model, pairs, [], settings, tmp_path, tok.pad_token_id, quiet=True,
          objective=PreferenceObjective(beta))
    after = preference_metrics(model, pairs, beta, batch_size=4, pad_id=tok.pad_token_id)
    assert after["reward_accuracy"] == 1.0 > before["reward_accuracy"]
    assert after["reward_margin"] > 0.1  # measured 0.23
    assert after["dpo_loss"] < before["dpo_loss"] - 0.05  # measured 0.693 -> 0.591
    assert after["chosen_reward"] > after["rejected_reward"]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), weights[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)


def test_full_fine_tuning_needs_precomputed_reference_and_then_trains(tok, tmp_path):
    pairs = _pairs(tok)
    model = registry.get("full").apply(build_model(len(tok), seed=0), {}, {})
    objective = PreferenceObjective(beta=0.5)
    with pytest.raises(UserError, match="precompute_reference") as err:
        objective.loss_sum(model, objective.collate(pairs, tok.pad_token_id))
    assert err.value.source == "method.name"
    with pytest.raises(UserError, match="precompute_reference"):
        preference_metrics(model, pairs, 0.5, batch_size=4, pad_id=tok.pad_token_id)

    precompute_reference(model, pairs, batch_size=4, pad_id=tok.pad_token_id)
    assert all(p.ref_chosen is not None and p.ref_rejected is not None for p in pairs)
    assert evaluate_loss(model, pairs, 4, tok.pad_token_id, torch.device("cpu"),
                         objective=objective) == pytest.approx(math.log(2), abs=1e-6)
    before = preference_metrics(model, pairs, 0.5, batch_size=4, pad_id=tok.pad_token_id)
    settings = Settings(learning_rate=1e-2, batch_size=len(pairs), max_steps=8, warmup_ratio=0.0,
                        eval_every=None, log_every=4, seed=0, group_by_length=False)
    train(model, pairs, [], settings, tmp_path, tok.pad_token_id, quiet=True, objective=objective)
    after = preference_metrics(model, pairs, 0.5, batch_size=4, pad_id=tok.pad_token_id)
    assert after["reward_accuracy"] == 1.0 > before["reward_accuracy"]
    assert after["reward_margin"] > 1.0 and after["dpo_loss"] < 0.3  # measured 2.87 and 0.085
