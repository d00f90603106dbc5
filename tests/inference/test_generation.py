"""Generation (``lmtune.inference.generation``): batched greedy decoding equal to one prompt at a time, and the
controls of ``eval.generation`` (n-gram blocking, repetition penalty, stop strings, the count of outputs that
ran into ``max_new_tokens``), on a tiny random model whose greedy output loops."""

import torch
from tiny import build_model

from lmtune.inference.generation import generate, generate_detailed

MAX = 20


def _prompts(enc):
    texts = ["the movie was great", "this drug gave me awful side effects and it was terrible", "it was fine"]
    return [enc.prompt_ids([{"role": "user", "content": t}]) for t in texts]


def _run(setup, batch_size=3, prompts=None, **controls):
    tok, model, enc = setup
    return generate_detailed(model, tok, prompts or _prompts(enc), MAX, tok.pad_token_id,
                             batch_size=batch_size, quiet=True, **controls)


def _bigrams(tokens):
    return list(zip(tokens, tokens[1:]))


def test_batched_greedy_generation_matches_one_at_a_time(setup):
    tok, model, enc = setup
    head = [{"role": "system", "content": "you are a helpful assistant"}]
    prompts = [enc.prompt_ids(head + [{"role": "user", "content": t}]) for t in
               ["the movie was great", "this drug gave me awful side effects and it was terrible", "it was fine"]]
    batched, counts = generate(model, tok, prompts, 6, tok.pad_token_id, batch_size=3, quiet=True)
    single = [generate(model, tok, [p], 6, tok.pad_token_id, batch_size=1, quiet=True)[0][0] for p in prompts]
    assert batched == single and all(0 <= c <= 6 for c in counts)


def test_greedy_output_of_the_tiny_model_loops(setup):
    out = _run(setup)
    assert out.hit_cap == [True, True, True] and out.counts == [MAX] * 3
    assert all(len(set(_bigrams(t))) < len(_bigrams(t)) for t in out.tokens)  # the premise of the tests below


def test_no_repeat_ngram_size_blocks_every_repeated_bigram(setup):
    out = _run(setup, no_repeat_ngram_size=2)
    for tokens in out.tokens:
        assert len(tokens) > 2 and len(set(_bigrams(tokens))) == len(_bigrams(tokens))


def test_repetition_penalty_changes_a_looping_output(setup):
    plain, penalized = _run(setup), _run(setup, repetition_penalty=1.5)
    assert penalized.texts != plain.texts
    assert sum(len(set(t)) for t in penalized.tokens) > sum(len(set(t)) for t in plain.tokens)


def test_a_stop_string_ends_the_generation_and_is_cut_from_it(setup):
    plain = _run(setup)
    stop = plain.texts[0][1:3]
    out = _run(setup, stop=[stop])
    assert out.texts[0] == plain.texts[0][:plain.texts[0].index(stop)].strip()
    assert stop not in out.texts[0] and out.counts[0] < MAX and out.hit_cap[0] is False
    for text, plain_text in zip(out.texts, plain.texts):
        assert stop not in text and plain_text.startswith(text)


def test_an_eos_is_not_a_hit_of_the_token_cap(setup):
    tok, _, enc = setup
    model = build_model(len(tok), seed=1).eval()
    with torch.no_grad():  # the output layer always favours EOS
        model.lm_head.weight.zero_()
        bias = torch.zeros(len(tok))
        bias[tok.eos_token_id] = 10.0
        model.lm_head.bias = torch.nn.Parameter(bias)
    out = generate_detailed(model, tok, _prompts(enc), MAX, tok.pad_token_id, quiet=True)
    assert out.counts == [0, 0, 0] and out.hit_cap == [False, False, False]


def test_batched_generation_with_controls_matches_one_at_a_time(setup):
    tok, _, enc = setup
    stop = _run(setup).texts[1][2:4]
    controls = {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "stop": [stop, "zzz"]}
    batched = _run(setup, batch_size=3, **controls)
    single = [_run(setup, batch_size=1, prompts=[p], **controls) for p in _prompts(enc)]
    assert batched.texts == [s.texts[0] for s in single]
    assert batched.counts == [s.counts[0] for s in single]
    assert batched.hit_cap == [s.hit_cap[0] for s in single]


def test_generate_keeps_returning_texts_and_counts(setup):
    tok, model, enc = setup
    texts, counts = generate(model, tok, _prompts(enc), MAX, tok.pad_token_id, quiet=True, stop=["zzz"])
    assert texts == _run(setup).texts and counts == [MAX] * 3
