"""Loss sums (``lmtune.train.loss``): the target-only path equals the full-logits path, packed rows equal
examples alone."""

import pytest
import torch
from tiny import build_model, build_tokenizer

from lmtune.data.encode import Encoder
from lmtune.methods import registry
from lmtune.train.batches import collate
from lmtune.train.loss import full_logits_loss_sum, loss_parts, target_loss_sum


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("chunk", [3, 4096])
def test_target_only_loss_and_gradients_equal_the_full_logits_path(method, chunk):
    tok = build_tokenizer()
    enc = Encoder(tok, 64)
    examples = [enc.encode([{"role": "user", "content": t}], c) for t, c in
                [("the movie was great", "positive"), ("it was fine, nothing special at all", "neutral indeed")]]
    batch = collate(examples, tok.pad_token_id)
    results = []
    for fn in (lambda m: target_loss_sum(m, batch, chunk=chunk), lambda m: full_logits_loss_sum(m, batch)):
        torch.manual_seed(0)
        model = registry.get(method).apply(build_model(len(tok), seed=0), {"r": 2} if method == "lora" else {}, {})
        if method == "lora":  # make LoRA B non-zero so its gradient path is exercised
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    torch.nn.init.normal_(p, std=0.1)
        assert loss_parts(model) is not None
        loss = fn(model)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-5)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("path", ["target_only", "full_logits"])
def test_packed_batches_give_the_same_per_example_loss_as_unpacked(path):
    from lmtune.train.batches import collate_packed

    tok = build_tokenizer()
    enc = Encoder(tok, 64)
    examples = [enc.encode([{"role": "user", "content": t}], c) for t, c in
                [("the movie was great", "positive"), ("it was fine, nothing special at all", "neutral indeed"),
                 ("this drug gave me awful side effects", "negative"), ("ok", "neutral")]]
    lm = enc.encode([], "the movie was terrible and boring", lm=True)  # every token a target
    examples.append(lm)
    torch.manual_seed(0)
    model = build_model(len(tok), seed=3)
    fn = (lambda b: target_loss_sum(model, b)) if path == "target_only" else (lambda b: full_logits_loss_sum(model, b))
    packed = collate_packed(examples, tok.pad_token_id, capacity=48)
    assert packed["input_ids"].shape[0] < len(examples)  # several examples share a row
    with torch.no_grad():
        total = fn(packed)
        alone = [fn(collate([e], tok.pad_token_id)) for e in examples]
        for k in range(len(examples)):
            # The same packed rows, with every other example's targets masked out.
            only_k = collate_packed([x if i == k else type(x)(x.input_ids, [-100] * len(x.labels))
                                     for i, x in enumerate(examples)], tok.pad_token_id, capacity=48)
            torch.testing.assert_close(fn(only_k), alone[k], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(total, torch.stack(alone).sum(), atol=1e-5, rtol=1e-5)
