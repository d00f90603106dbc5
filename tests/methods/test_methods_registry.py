"""Every fine-tuning method of the registry (``lmtune.methods.registry``) on tiny models: it learns, trains only its
own parameters, reloads exactly, takes a classification head, and refuses bad options as recipe errors."""

import pytest
import torch
import torch.nn.functional as F
from tiny import METHOD_SENTS as SENTS
from tiny import build_gpt2, build_model, sharpened
from tiny import eval_logits as _logits
from tiny import method_examples as _dataset

from lmtune.data.encode import Encoder
from lmtune.errors import UserError
from lmtune.inference.label_scoring import classify
from lmtune.inference.scoring import completion_logprobs
from lmtune.methods import registry
from lmtune.train import loop
from lmtune.train.batches import collate
from lmtune.train.loss import target_loss_sum
from lmtune.train.track import read_metrics

OPTIONS = {  # small settings of each method; what each trains, by parameter name
    "full": ({}, ""),
    "lora": ({"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}, "lora_"),
    "dora": ({"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}, "lora_"),
    "ia3": ({}, "ia3_l"),
    "prompt_tuning": ({"num_virtual_tokens": 4}, "prompt_encoder"),
    "prefix_tuning": ({"num_virtual_tokens": 4}, "prompt_encoder"),
    "adapter": ({"bottleneck_size": 4}, "bottleneck_adapter"),
}
ARCHS = {"llama": build_model, "gpt2": build_gpt2}


def _perturbed(tok, method):
    """A tiny Llama with ``method`` applied and its trainable weights moved off their (often neutral) start."""
    torch.manual_seed(1)
    model = registry.get(method).apply(sharpened(build_model(len(tok))), dict(OPTIONS[method][0]), {})
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    return model


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", OPTIONS)
def test_method_learns_trains_only_its_parameters_and_reloads(tok, tmp_path, method, arch):
    options, marker = OPTIONS[method]
    data = _dataset(tok)
    batch = collate(data, tok.pad_token_id)
    base_logits = _logits(sharpened(ARCHS[arch](len(tok))), batch)
    torch.manual_seed(1)
    model = registry.get(method).apply(sharpened(ARCHS[arch](len(tok))), dict(options), {})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    settings = loop.Settings(learning_rate=0.1, batch_size=8, max_steps=6, eval_every=None, log_every=1,
                             precision="fp32", warmup_ratio=0.0, max_grad_norm=None, seed=0)
    loop.train(model, data, [], settings, tmp_path / "run", tok.pad_token_id, quiet=True)

    losses = [m["loss"] for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if m["split"] == "train"]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.1, losses

    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable  # frozen weights are bit-identical
    if method == "full":
        assert trainable == set(before)
    else:
        assert trainable and all(marker in n for n in trainable), sorted(trainable)
        assert changed == trainable

    registry.get(method).save(model, tmp_path / "final")
    assert sorted(p.name for p in (tmp_path / "final").iterdir() if p.suffix == ".safetensors")
    loaded = registry.get(method).load(sharpened(ARCHS[arch](len(tok))), tmp_path / "final")
    trained_logits = _logits(model, batch)
    assert not torch.allclose(trained_logits[:, -batch["input_ids"].size(1):], base_logits, atol=1e-4)
    torch.testing.assert_close(_logits(loaded, batch), trained_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["dora", "ia3", "adapter"])
def test_cached_label_scoring_equals_plain_scoring_with_the_method(tok, method):
    model = _perturbed(tok, method).eval()
    enc = Encoder(tok, 128)
    head = [{"role": "system", "content": "you are a helpful assistant"}]
    prompts = [enc.prompt_ids(head + [{"role": "user", "content": t}]) for t in SENTS[:3]]
    labels = [enc.target_ids(x) for x in ("positive", "negative movie")]
    _, scores = classify(model, prompts, labels, tok.pad_token_id, batch_size=2, quiet=True)
    flat = completion_logprobs(model, [(p, lab) for p in prompts for lab in labels], tok.pad_token_id,
                               quiet=True)
    assert [s for row in scores for s in row] == pytest.approx(flat, abs=1e-4)


@pytest.mark.parametrize("method", ["dora", "ia3", "prompt_tuning", "prefix_tuning", "adapter"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(tok, method):
    from lmtune.train import speedups

    batch = collate(_dataset(tok, 4), tok.pad_token_id)
    results = []
    for checkpointing in (False, True):
        model = _perturbed(tok, method).train()
        if checkpointing:
            speedups.enable_activation_checkpointing(model)
        if checkpointing and method == "prefix_tuning":
            with pytest.raises(UserError) as err:
                target_loss_sum(model, batch)
            assert err.value.source == "training.gradient_checkpointing"
            return
        loss = target_loss_sum(model, batch)
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (plain, plain_grads), (loss, grads) = results
    torch.testing.assert_close(loss, plain, atol=1e-5, rtol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["lora", "dora", "ia3", "prompt_tuning", "prefix_tuning", "adapter"])
def test_merged_weights_give_the_same_logits_or_there_is_nothing_to_merge(tok, method):
    model = _perturbed(tok, method).eval()
    ids = collate(_dataset(tok, 2), tok.pad_token_id)["input_ids"]
    if method in ("prompt_tuning", "prefix_tuning", "adapter"):
        assert not hasattr(model, "merge_adapter")  # evaluation then runs the model as trained
        return
    with torch.no_grad():
        before = model(input_ids=ids).logits
        model.merge_adapter()
        merged = model(input_ids=ids).logits
        model.unmerge_adapter()
    torch.testing.assert_close(merged, before, atol=1e-4, rtol=1e-4)


# --- classification heads: peft's SEQ_CLS keeps the head trainable; the adapter trains it too.

def _classifier(kind: str, vocab_size: int):
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    if kind == "bert":
        return BertForSequenceClassification(BertConfig(
            vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0))
    return LlamaForSequenceClassification(LlamaConfig(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, num_labels=3, pad_token_id=0))


HEAD_OPTIONS = {"lora": {"r": 4, "lora_dropout": 0.0}, "ia3": {}, "adapter": {"style": "pfeiffer"},
                "prefix_tuning": {"num_virtual_tokens": 4}, "prompt_tuning": {"num_virtual_tokens": 4}}


@pytest.mark.parametrize("kind", ["llama", "bert"])
@pytest.mark.parametrize("method", HEAD_OPTIONS)
def test_classification_head_trains_with_the_method_and_reloads(tok, tmp_path, method, kind):
    options = HEAD_OPTIONS[method]
    if method == "prompt_tuning" and kind == "llama":
        with pytest.raises(UserError, match="use prefix_tuning or lora"):
            registry.get(method).apply(_classifier(kind, len(tok)), options, {})
        return
    enc = Encoder(tok, 64)
    data = [enc.prompt_ids([{"role": "user", "content": s}]) for s in SENTS]
    ids = torch.full((5, max(map(len, data))), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(data):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
    targets = torch.tensor([2, 0, 1, 2, 0])
    model = registry.get(method).apply(_classifier(kind, len(tok)), options, {})
    head = "classifier" if kind == "bert" else "score"
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(head in n for n in trainable)
    if method != "adapter":
        assert model.peft_config["default"].task_type == "SEQ_CLS"
    if method.endswith("_tuning"):  # padding must not change a row's logits (the head pools the right token)
        row = int(mask.sum(1).argmin())
        length = int(mask[row].sum())
        assert length < ids.size(1)
        with torch.no_grad():
            model.eval()
            alone = model(input_ids=ids[row:row + 1, :length]).logits
            torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits[row:row + 1], alone,
                                       atol=1e-5, rtol=1e-5)
        model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    registry.get(method).save(model, tmp_path)
    loaded = registry.get(method).load(_classifier(kind, len(tok)), tmp_path)
    batch = {"input_ids": ids, "attention_mask": mask}
    torch.testing.assert_close(_logits(loaded, batch), _logits(model, batch), atol=1e-5, rtol=1e-5)


# --- options and errors

@pytest.mark.parametrize("method, options, message", [
    ("adapter", {"size": 8}, "unknown adapter option 'size'"),
    ("adapter", {"style": "parallel"}, "unknown adapter style"),
    ("adapter", {"non_linearity": "tanh"}, "unknown non_linearity"),
    ("adapter", {"reduction_factor": 0}, "reduction_factor must be a whole number"),
    ("adapter", {"reduction_factor": 4, "bottleneck_size": 8}, "not both"),
    ("ia3", {"target_module": ["k_proj"]}, "did you mean 'target_modules'"),
    ("ia3", {"target_modules": ["k_proj"], "feedforward_modules": ["down_proj"]}, "feedforward_modules"),
    ("prompt_tuning", {"num_virtual_token": 8}, "did you mean 'num_virtual_tokens'"),
    ("prompt_tuning", {"prompt_tuning_init": "TEXT"}, "peft rejected the prompt_tuning options"),
    ("lora", {"target_modules": ["no_such_layer"]}, "peft could not apply lora"),
])
def test_bad_options_are_user_errors(tok, method, options, message):
    with pytest.raises(UserError, match=message) as err:
        registry.get(method).apply(build_model(len(tok)), options, {})
    assert err.value.source == "method.peft"
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", ["lora", "prefix_tuning", "adapter"])
def test_freeze_is_for_full_fine_tuning_only(tok, method):
    with pytest.raises(UserError) as err:
        registry.get(method).apply(build_model(len(tok)), {}, {"layers": 1})
    assert err.value.source == "method.freeze"


def test_lora_defaults_apply_and_options_override_them(tok):
    model = registry.get("dora").apply(build_model(len(tok)), {"r": 2}, {})
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.use_dora, config.task_type) == (2, 32, True, "CAUSAL_LM")


def test_soft_prompts_default_to_20_virtual_tokens():
    assert registry.get("prompt_tuning").config({}).num_virtual_tokens == 20
    assert registry.get("prefix_tuning").config({}).num_virtual_tokens == 20


def test_lora_loads_with_no_extra_arguments():
    assert registry.get("lora").load_kwargs({}) == {}
