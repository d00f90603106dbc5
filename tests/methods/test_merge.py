"""An adapter merged for the span of a block (``lmtune.methods.merge``): the same logits, unmerged after."""

import torch
from tiny import method_model, train_examples


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
