"""Prompt and prefix tuning (``lmtune.methods.soft_prompts``): the virtual tokens are planted as a real token
sequence P, so the tuned model on x must compute exactly what the base model computes on P + x; packed rows,
which cannot carry one soft prompt per example, are refused."""

import pytest
import torch
from tiny import build_gpt2, build_model, sharpened
from tiny import method_examples as _dataset

from lmtune.data.encode import IGNORE, Encoder
from lmtune.errors import UserError
from lmtune.inference.generation import generate
from lmtune.inference.label_scoring import classify
from lmtune.inference.scoring import completion_logprobs
from lmtune.methods import registry
from lmtune.train.batches import collate
from lmtune.train.loss import full_logits_loss_sum, target_loss_sum

ARCHS = {"llama": build_model, "gpt2": build_gpt2}


PLANTED = "you are a helpful assistant"


def _planted(tok, method, base_factory):
    """(base model, tuned model whose virtual tokens are the token sequence P, P's ids)."""
    planted = tok(PLANTED, add_special_tokens=False)["input_ids"]
    base = base_factory()
    model = registry.get(method).apply(base_factory(), {"num_virtual_tokens": len(planted)}, {})
    weight = model.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        if method == "prompt_tuning":
            weight.copy_(base.get_input_embeddings()(torch.tensor(planted)))
        else:  # per virtual token: keys and values of every layer, as peft's get_prompt unpacks them
            cache = base(input_ids=torch.tensor([planted]), use_cache=True).past_key_values
            kv = torch.stack([t[0] for layer in cache.layers for t in (layer.keys, layer.values)])
            weight.copy_(kv.permute(2, 0, 1, 3).reshape(len(planted), -1))
    return base, model.eval(), planted


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_virtual_token_loss_equals_the_base_model_on_the_planted_prefix(tok, method, arch):
    base, model, planted = _planted(tok, method, lambda: ARCHS[arch](len(tok)).eval())
    enc = Encoder(tok, 64)
    batch = collate([enc.encode([{"role": "user", "content": t}], c) for t, c in
                     [("the movie was great", "positive"), ("it was fine, nothing special at all", "neutral indeed")]],
                    tok.pad_token_id)  # right-padded: rows of different lengths
    pre = torch.tensor([planted] * 2)
    direct = {"input_ids": torch.cat([pre, batch["input_ids"]], 1),
              "attention_mask": torch.cat([torch.ones_like(pre), batch["attention_mask"]], 1),
              "labels": torch.cat([torch.full_like(pre, IGNORE), batch["labels"]], 1)}
    with torch.no_grad():
        expected = full_logits_loss_sum(base, direct)
        torch.testing.assert_close(target_loss_sum(model, batch), expected, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(full_logits_loss_sum(model, batch), expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_virtual_token_scores_and_generations_equal_the_base_model_on_the_planted_prefix(tok, method):
    base, model, planted = _planted(tok, method, lambda: sharpened(build_model(len(tok)), std=0.4, seed=1).eval())
    enc = Encoder(tok, 128)
    texts = ["the movie was great", "this drug gave me awful side effects and it was terrible", "it was fine"]
    head = [{"role": "system", "content": "you are a helpful assistant"}]
    prompts = [enc.prompt_ids(head + [{"role": "user", "content": t}]) for t in texts]
    labels = [enc.target_ids(x) for x in ("positive", "negative movie", "neutral was fine")]
    pad = tok.pad_token_id
    flat = completion_logprobs(base, [(planted + p, lab) for p in prompts for lab in labels], pad, quiet=True)
    expected = [flat[i * 3:(i + 1) * 3] for i in range(3)]
    scored = completion_logprobs(model, [(p, lab) for p in prompts for lab in labels], pad, batch_size=4,
                                 quiet=True)
    assert scored == pytest.approx(flat, abs=1e-4)
    best, scores = classify(model, prompts, labels, pad, batch_size=2, quiet=True)
    for row, exp in zip(scores, expected):
        assert row == pytest.approx(exp, abs=1e-4)
    assert best == [max(range(3), key=r.__getitem__) for r in expected]

    want = generate(base, tok, [planted + p for p in prompts], 6, pad, batch_size=1, quiet=True)
    assert len(set(want[0])) == 3  # the prompts lead to different texts, so a mix-up would show
    assert generate(model, tok, prompts, 6, pad, batch_size=3, quiet=True) == want
    assert generate(model, tok, prompts + prompts[:1], 6, pad, batch_size=2, quiet=True) == (
        want[0] + want[0][:1], want[1] + want[1][:1])


def test_packed_batches_with_virtual_tokens_are_a_user_error(tok):
    from lmtune.train.batches import collate_packed

    model = registry.get("prompt_tuning").apply(build_model(len(tok)), {"num_virtual_tokens": 2}, {})
    with pytest.raises(UserError) as err:
        target_loss_sum(model, collate_packed(_dataset(tok, 4), tok.pad_token_id, capacity=64))
    assert err.value.source == "training.packing"
