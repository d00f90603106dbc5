import pytest
import torch

from lmtune.data.encode import Encoder
from lmtune.evaluate import predict
from tiny import build_model, build_tokenizer


@pytest.fixture(scope="module")
def setup():
    tok = build_tokenizer()
    model = build_model(len(tok), seed=1).eval()
    return tok, model, Encoder(tok, 128)


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
    best, scores = predict.classify(model, prompts, labels, tok.pad_token_id, batch_size=2, quiet=True)
    flat = predict.completion_logprobs(model, [(p, lab) for p in prompts for lab in labels], tok.pad_token_id,
                                       batch_size=4, quiet=True)
    expected = [flat[i * 3:(i + 1) * 3] for i in range(len(prompts))]
    for row, exp in zip(scores, expected):
        assert row == pytest.approx(exp, abs=1e-4)
    assert best == [max(range(3), key=r.__getitem__) for r in expected]


def test_completion_logprobs_match_a_manual_forward(setup):
    tok, model, enc = setup
    prompt, target = _prompts(enc)[0], enc.target_ids("positive")
    (score,) = predict.completion_logprobs(model, [(prompt, target)], tok.pad_token_id, quiet=True)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + target])).logits[0]
    logp = torch.log_softmax(logits, -1)
    manual = sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(target))
    assert score == pytest.approx(manual, abs=1e-4)


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
    best, _ = predict.classify(model, _prompts(enc), labels, tok.pad_token_id, quiet=True)
    assert best == [1, 1, 1]


def test_batched_greedy_generation_matches_one_at_a_time(setup):
    tok, model, enc = setup
    prompts = _prompts(enc)
    batched, counts = predict.generate(model, tok, prompts, 6, tok.pad_token_id, batch_size=3, quiet=True)
    single = [predict.generate(model, tok, [p], 6, tok.pad_token_id, batch_size=1, quiet=True)[0][0] for p in prompts]
    assert batched == single and all(0 <= c <= 6 for c in counts)
