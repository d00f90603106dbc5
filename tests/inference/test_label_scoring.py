"""Label scoring (``lmtune.inference.label_scoring``): every label's log-probability after a prompt, the
shared prompt prefix and shared label tokens computed once, equal to scoring each full sequence."""

import pytest
import torch
from tiny import build_model

from lmtune.inference.label_scoring import classify, common_prefix_length
from lmtune.inference.scoring import completion_logprobs


def _prompts(enc, shots=False):
    texts = ["the movie was great", "this drug gave me awful side effects and it was terrible", "it was fine"]
    head = [{"role": "system", "content": "you are a helpful assistant"}]
    if shots:
        head += [{"role": "user", "content": "the movie was boring"}, {"role": "assistant", "content": "negative"}]
    return [enc.prompt_ids(head + [{"role": "user", "content": t}]) for t in texts]


@pytest.mark.parametrize("shots", [False, True])
def test_shared_prefix_scores_equal_full_sequence_scores(setup, shots):
    tok, model, enc = setup
    prompts = _prompts(enc, shots)
    labels = [enc.target_ids(x) for x in ("positive", "negative movie", "neutral was fine")]
    assert len({len(lab) for lab in labels}) > 1  # labels of different token lengths
    best, scores = classify(model, prompts, labels, tok.pad_token_id, batch_size=2, quiet=True)
    flat = completion_logprobs(model, [(p, lab) for p in prompts for lab in labels], tok.pad_token_id,
                               batch_size=4, quiet=True)
    expected = [flat[i * 3:(i + 1) * 3] for i in range(len(prompts))]
    for row, exp in zip(scores, expected):
        assert row == pytest.approx(exp, abs=1e-4)
    assert best == [max(range(3), key=r.__getitem__) for r in expected]


def test_label_scoring_picks_the_planted_label(setup):
    tok, _, enc = setup
    model = build_model(len(tok), seed=2).eval()
    labels = [enc.target_ids(x) for x in ("positive", "negative")]
    # Plant a preference: the output layer ignores the input and favours the tokens of "negative".
    with torch.no_grad():
        model.lm_head.weight.zero_()
        bias = torch.zeros(len(tok))
        bias[labels[1]] = 10.0
        model.lm_head.bias = torch.nn.Parameter(bias)
    best, _ = classify(model, _prompts(enc), labels, tok.pad_token_id, quiet=True)
    assert best == [1, 1, 1]


# Labels that share token prefixes (a trie with shared nodes), of different lengths, some a prefix
# of another, as many as a real intent set.
MANY = ["positive", "positive movie", "positive drug", "negative", "negative movie was", "negative side effects",
        "neutral", "neutral was fine", "the movie", "the movie was great", "the drug", "it was fine", "fine",
        "great", "terrible", "boring", "awful side effects", "pain", "nothing special", "helpful"]


def _gqa_gpt2_or_eager(kind: str, vocab: int):
    """The tiny Llama with grouped key/value heads, eager attention, or a GPT-2 (other cache and mask code)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=16, n_layer=2, n_head=2, n_positions=512)).eval()
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2 if kind == "gqa" else 4,
                         max_position_embeddings=512, pad_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    if kind == "eager":
        config._attn_implementation = "eager"
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("kind", ["gqa", "eager", "gpt2"])
@pytest.mark.parametrize("shots", [False, True])
def test_twenty_labels_with_shared_prefixes_score_as_full_sequences(setup, kind, shots):
    tok, _, enc = setup
    model = _gqa_gpt2_or_eager(kind, len(tok))
    prompts = _prompts(enc, shots)
    labels = [enc.target_ids(x) for x in MANY]
    _, scores = classify(model, prompts, labels, tok.pad_token_id, batch_size=2, quiet=True)
    flat = completion_logprobs(model, [(p, lab) for p in prompts for lab in labels], tok.pad_token_id,
                               batch_size=16, quiet=True)
    assert [s for row in scores for s in row] == pytest.approx(flat, abs=1e-4)


def test_shared_label_tokens_are_fed_once(setup):
    from lmtune.inference.label_scoring import build_trie

    _, _, enc = setup
    labels = [enc.target_ids(x) for x in MANY]
    trie = build_trie(labels)
    prefixes = {tuple(lab[:d]) for lab in labels for d in range(1, len(lab))}
    assert len(trie.tokens) == len(prefixes) < sum(len(lab) - 1 for lab in labels)
    assert len(trie.sources) == sum(len(lab) for lab in labels)  # every label token is scored


def test_forward_passes_hold_no_more_rows_than_the_batch(setup):
    """The prompt's cache is not repeated per label: no forward pass runs batch x labels rows."""
    tok, model, enc = setup
    rows = []
    hook = model.model.register_forward_pre_hook(lambda _, args, kw: rows.append(kw["input_ids"].size(0)),
                                                 with_kwargs=True)
    try:
        classify(model, _prompts(enc, shots=True), [enc.target_ids(x) for x in MANY], tok.pad_token_id,
                 batch_size=2, quiet=True)
    finally:
        hook.remove()
    assert rows and max(rows) <= 2


def _budget_case(setup):
    """(model, prompts, labels, memory of one row's pass beside the shared prefix, estimator, prefix length)."""
    from lmtune.inference.label_scoring import Estimator, build_trie

    tok, model, enc = setup
    prompts, labels = _prompts(enc, shots=True), [enc.target_ids(x) for x in MANY]
    n_prefix, nodes = common_prefix_length(prompts), len(build_trie(labels).tokens)
    est = Estimator.of(model)
    one = est.row(n_prefix, max(map(len, prompts)) - n_prefix + nodes, 1 + nodes)
    return model, prompts, labels, one, est, n_prefix


def test_the_memory_budget_picks_the_batch_size(setup):
    from lmtune.inference.label_scoring import plan

    model, prompts, labels, one, est, n_prefix = _budget_case(setup)
    scheme = plan(model, prompts, labels, max_batch=8, budget=est.prefix(n_prefix) + 2 * one)
    assert [len(b) for b in scheme.batches] == [2, 1] and scheme.peak_bytes <= est.prefix(n_prefix) + 2 * one
    assert [len(b) for b in plan(model, prompts, labels, 8, 1 << 30).batches] == [3]


def test_the_memory_budget_refuses_what_cannot_fit(setup):
    from lmtune.errors import UserError

    tok = setup[0]
    model, prompts, labels, one, _, _ = _budget_case(setup)
    with pytest.raises(UserError) as err:
        classify(model, prompts, labels, tok.pad_token_id, quiet=True, memory_gb=one / 2 / (1 << 30))
    assert err.value.source == "eval.memory_gb" and "20 labels" in str(err.value)


@pytest.mark.parametrize("kernel", ["flash", "matmul"])
@pytest.mark.parametrize("kind", ["gqa", "eager", "gpt2"])
def test_the_shared_prefix_is_attended_once_for_all_rows(setup, kind, kernel, monkeypatch):
    """The stacked-rows attention to the shared prefix runs (not the concatenating fallback) and scores right,
    with torch's CPU flash kernel and with the plain matrix products used on other devices."""
    from lmtune.inference import prefix_attention

    if kernel == "matmul":
        monkeypatch.setattr(prefix_attention, "_FLASH_CPU", None)
    tok, _, enc = setup
    model = _gqa_gpt2_or_eager(kind, len(tok))
    prompts, labels = _prompts(enc, shots=True), [enc.target_ids(x) for x in MANY[:6]]
    flat = completion_logprobs(model, [(p, lab) for p in prompts for lab in labels], tok.pad_token_id,
                               quiet=True)

    def refuse(*args, **kwargs):
        raise AssertionError("fell back to concatenated keys")
    monkeypatch.setattr(prefix_attention, "_fallback", refuse)
    _, scores = classify(model, prompts, labels, tok.pad_token_id, batch_size=3, quiet=True)
    assert [s for row in scores for s in row] == pytest.approx(flat, abs=1e-4)
    assert model.config._attn_implementation == ("eager" if kind == "eager" else "sdpa")  # restored


def test_label_scores_under_bf16_autocast_match_full_sequences(setup):
    """Evaluation at training.precision bf16 runs under autocast: the shared-prefix path takes it too."""
    tok, _, enc = setup
    model = _gqa_gpt2_or_eager("gqa", len(tok))
    prompts, labels = _prompts(enc, shots=True), [enc.target_ids(x) for x in MANY]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, scores = classify(model, prompts, labels, tok.pad_token_id, quiet=True)
        flat = completion_logprobs(model, [(p, lab) for p in prompts for lab in labels], tok.pad_token_id,
                                   quiet=True)
    assert [s for row in scores for s in row] == pytest.approx(flat, abs=0.05)
