"""The bottleneck adapter (``lmtune.methods.adapter``): it starts as the base model, cannot be merged, and
refuses a base model it was not trained on."""

import pytest
import torch
from tiny import build_model
from tiny import eval_logits as _logits
from tiny import method_examples as _dataset

from lmtune.errors import UserError
from lmtune.methods import registry
from lmtune.train.batches import collate


@pytest.mark.parametrize("style, sites", [("houlsby", 4), ("pfeiffer", 2)])
def test_adapter_starts_as_the_base_model_and_cannot_be_merged(tok, style, sites):
    batch = collate(_dataset(tok, 2), tok.pad_token_id)
    expected = _logits(build_model(len(tok)), batch)
    model = registry.get("adapter").apply(build_model(len(tok)), {"style": style, "reduction_factor": 4}, {})
    torch.testing.assert_close(_logits(model, batch), expected, atol=0, rtol=0)
    assert len(model.bottleneck_adapter_config["modules"]) == sites
    hidden, size = 16, 16 // 4
    assert registry.count_parameters(model)[0] == sites * (2 * hidden * size + size + hidden)
    assert not hasattr(model, "merge_adapter")


def test_adapter_refuses_a_different_base_model(tok, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    method = registry.get("adapter")
    method.save(method.apply(build_model(len(tok)), {}, {}), tmp_path)
    wider = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=32,
                                         num_hidden_layers=2, num_attention_heads=2))
    with pytest.raises(UserError, match="does not fit this base model"):
        method.load(wider, tmp_path)
