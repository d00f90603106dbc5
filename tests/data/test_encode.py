"""Encoding (``lmtune.data.encode``): prompt tokens masked, EOS ends the target, truncation counted, and
language-modelling documents packed into full blocks."""

from tiny import build_tokenizer

from lmtune.data.encode import IGNORE, Encoder

GOOD = ["the movie was great and i loved it", "this drug helped my pain a lot"]


def test_prompt_tokens_are_masked_and_eos_ends_the_target(tok):
    enc = Encoder(tok, max_length=64)
    e = enc.encode([{"role": "user", "content": "the movie was great"}], "positive")
    n_prompt = len(enc.prompt_ids([{"role": "user", "content": "the movie was great"}]))
    assert all(t == IGNORE for t in e.labels[:n_prompt])
    assert e.labels[n_prompt:] == e.input_ids[n_prompt:]
    assert e.input_ids[-1] == tok.eos_token_id and e.labels[-1] == tok.eos_token_id
    assert e.n_targets == len(tok("positive", add_special_tokens=False)["input_ids"]) + 1


def test_truncation_is_counted_and_keeps_the_target(tok):
    enc = Encoder(tok, max_length=24)
    long_text = " ".join(["the movie was terrible and boring"] * 20)
    e = enc.encode([{"role": "user", "content": long_text}], "negative")
    assert e.truncated and len(e.input_ids) == 24
    assert e.input_ids[-1] == tok.eos_token_id and e.n_targets >= 2
    short = enc.encode([{"role": "user", "content": "ok"}], "neutral")
    assert not short.truncated


def test_language_modeling_packs_documents_into_full_blocks():
    from lmtune.data.encode import pack_blocks

    enc = Encoder(build_tokenizer(chat=False), 16)
    docs = [([], " ".join(GOOD * (i + 1))) for i in range(5)]
    blocks = pack_blocks(enc, docs, 16)
    stream = [t for messages, text in docs for t in enc.prompt_ids(messages) + enc.target_ids(text)]
    assert [t for b in blocks for t in b.input_ids] == stream  # nothing truncated away
    assert all(len(b.input_ids) == 16 for b in blocks[:-1])
    assert blocks[0].labels[1:] == blocks[0].input_ids[1:] and blocks[0].labels[0] == -100  # nothing predicts it
    assert sum(b.n_targets for b in blocks) == len(stream) - len(blocks)
    assert stream.count(enc.eos) == 5  # each document ends with EOS
