"""Forgetting probes (``lmtune.evaluate.forgetting``): perplexity and multiple choice, on tiny models; a run
that measures them (and replays general text against forgetting) end to end."""

import copy
import json
import math
import random
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli, write_jsonl
from tiny import SENTENCES, build_model

from lmtune.data.encode import Encoder
from lmtune.errors import UserError
from lmtune.evaluate import forgetting
from lmtune.evaluate.forgetting import LETTERS, Probe, Question, mc_prompt
from lmtune.train import loop

WORDS = ["positive", "negative", "neutral", "great", "boring", "awful"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _settings(**kw):
    base = {"learning_rate": 1e-2, "batch_size": 8, "max_steps": 40, "eval_every": None, "log_every": 10,
            "precision": "fp32", "warmup_ratio": 0.0, "seed": 0}
    return loop.Settings(**{**base, **kw})


def _quiz() -> list[Question]:
    """One question per sentence; the right letter follows no rule the model could guess."""
    return [Question(s, WORDS[i % 3:i % 3 + 4], (i * 3) % 4, f"quiz:{i + 1}") for i, s in enumerate(SENTENCES)]


def _documents(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(SENTENCES) for _ in range(4)) for _ in range(n)]


@pytest.fixture(scope="module")
def quiz_model(tok, tmp_path_factory):
    """(model before, model after) training on the quiz's right letters."""
    before = build_model(len(tok), seed=0)
    after = copy.deepcopy(before)
    enc = Encoder(tok, 128)
    data = [enc.encode([{"role": "user", "content": mc_prompt(q)}], LETTERS[q.answer]) for q in _quiz()]
    loop.train(after, data, [], _settings(learning_rate=2e-2, batch_size=11, max_steps=60),
               tmp_path_factory.mktemp("quiz"), tok.pad_token_id, quiet=True)
    return before, after


def _direct_choice(model, tok, q: Question) -> int:
    """The letter with the highest log-likelihood after the prompt, from one plain forward per letter."""
    text = tok.apply_chat_template([{"role": "user", "content": mc_prompt(q)}], add_generation_prompt=True,
                                   tokenize=False)
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    scores = []
    with torch.no_grad():
        for letter in LETTERS[:len(q.choices)]:
            ids = prompt + tok(letter, add_special_tokens=False)["input_ids"]
            logp = F.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
            scores.append(sum(logp[i - 1, ids[i]].item() for i in range(len(prompt), len(ids))))
    return max(range(len(scores)), key=scores.__getitem__)


def test_mc_prompt_format():
    q = Question("What is 2+2?", ["3", "4"], 1, "x:1")
    assert mc_prompt(q) == "What is 2+2?\nA. 3\nB. 4\nAnswer:"


def test_mc_accuracy_equals_the_direct_argmax(tok, quiz_model):
    model = quiz_model[1]
    direct = [_direct_choice(model, tok, q) for q in _quiz()]
    assert len(set(direct)) > 1  # the model's choice depends on the question
    # Answer keys built from the direct argmax: all right, all wrong, then exactly the first 4 right.
    for key, expected in [(direct, 1.0), ([(d + 1) % 4 for d in direct], 0.0),
                          ([d if i < 4 else (d + 2) % 4 for i, d in enumerate(direct)], 4 / len(direct))]:
        questions = [Question(q.question, q.choices, k, q.source) for q, k in zip(_quiz(), key)]
        result = forgetting.measure(model, tok, [Probe("quiz", "multiple_choice", "-", questions)], batch_size=3,
                                    quiet=True)["quiz"]
        correct = result.pop("correct")
        assert result == {"kind": "multiple_choice", "accuracy": pytest.approx(expected), "n": len(direct),
                          "truncated_prompts": 0}
        assert correct == [int(d == k) for d, k in zip(direct, key)]  # one 1/0 per question, in order


def test_a_model_that_learned_the_answers_scores_higher(tok, quiz_model):
    probe = Probe("quiz", "multiple_choice", "-", _quiz())
    before, after = (forgetting.measure(m, tok, [probe], quiet=True)["quiz"]["accuracy"] for m in quiz_model)
    assert after == 1.0 and before < 0.5
    change = forgetting.compare({"quiz": {"kind": "multiple_choice", "accuracy": after}},
                                {"quiz": {"kind": "multiple_choice", "accuracy": before}})["quiz"]
    assert change["metric"] == "accuracy" and change["forgot"] and change["change"] == pytest.approx(before - 1)


def test_perplexity_is_exp_of_the_mean_token_nll(tok):
    model = build_model(len(tok), seed=1)
    docs = _documents(5, seed=1)
    probe = Probe("general", "perplexity", "-", docs)
    result = forgetting.measure(model, tok, [probe], batch_size=3, max_length=16, quiet=True)["general"]
    # Directly: BOS + text + EOS per document, one stream cut into 16-token blocks, every token after
    # a block's first predicted from what precedes it in the block.
    stream = [t for d in docs for t in [tok.bos_token_id] + tok(d, add_special_tokens=False)["input_ids"]
              + [tok.eos_token_id]]
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(stream), 16):
            block = torch.tensor([stream[i:i + 16]])
            if block.size(1) < 2:
                continue
            logits = model(block).logits[0, :-1]
            nll += F.cross_entropy(logits, block[0, 1:], reduction="sum").item()
            count += block.size(1) - 1
    assert result["kind"] == "perplexity" and result["tokens"] == count
    assert len(result["units"]) == math.ceil(len(range(0, len(stream), 16)) / 3)  # one per batch of 3 blocks
    assert (sum(n for _, n in result["units"]) == count
            and sum(x for x, _ in result["units"]) == pytest.approx(nll, rel=1e-4))
    assert result["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_load_probes_reads_both_kinds_and_samples(tmp_path):
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": d} for d in _documents(30, 0)])
    (tmp_path / "mmlu").mkdir()
    rows = [{"subject": s, "question": f"{s} question {i}", "choices": ["w", "x", "y", "z"],
             "answer": LETTERS[i % 4], "answer_index": i % 4}
            for s, n in [("algebra", 20), ("biology", 5), ("chemistry", 3)] for i in range(n)]
    mmlu = write_jsonl(tmp_path / "mmlu" / "test.jsonl", rows)
    probes = forgetting.load_probes({"data": [str(general), str(mmlu)], "max_examples": 9}, seed=3)
    assert [(p.name, p.kind, len(p.items)) for p in probes] == [("general", "perplexity", 9),
                                                                ("mmlu/test", "multiple_choice", 9)]
    subjects = [q.subject for q in probes[1].items]
    assert {s: subjects.count(s) for s in set(subjects)} == {"algebra": 3, "biology": 3, "chemistry": 3}
    assert all(q.answer == rows[int(q.source.rsplit(":", 1)[1]) - 1]["answer_index"] for q in probes[1].items)
    again = forgetting.load_probes({"data": str(mmlu), "max_examples": 9}, seed=3)[0]
    other = forgetting.load_probes({"data": str(mmlu), "max_examples": 9}, seed=4)[0]
    assert [q.source for q in again.items] == [q.source for q in probes[1].items]
    assert [q.source for q in other.items] != [q.source for q in again.items]


@pytest.mark.parametrize("answer, expected", [("C", 2), ("c", 2), (2, 2), (0, 0), ("dog", 3), (" B ", 1)])
def test_answers_as_letter_index_or_text(answer, expected):
    assert forgetting.parse_answer(answer, ["cat", "cow", "hen", "dog"], "f:1") == expected


@pytest.mark.parametrize("record, words", [
    ({"question": "q", "choices": ["a", "b"], "answer": "C"}, "neither a letter A-B"),
    ({"question": "q", "choices": ["a", "b"], "answer": 2}, "an index 0-1"),
    ({"question": "q", "choices": ["a", "b"], "answer": True}, "neither"),
    ({"question": "q", "choices": "ab", "answer": 0}, "\"choices\" must be a list"),
    ({"question": "q", "choices": ["a"], "answer": 0}, "\"choices\" must be a list"),
    ({"question": "", "choices": ["a", "b"], "answer": 0}, "\"question\" must be"),
    ({"text": "general text"}, "keep one kind per file"),
    ({"prompt": "p", "completion": "c"}, "needs {\"text\"}"),
])
def test_bad_probe_records_name_file_and_line(tmp_path, record, words):
    good = {"question": "fine", "choices": ["a", "b"], "answer": "A"}
    path = write_jsonl(tmp_path / "quiz.jsonl", [good, record])
    with pytest.raises(UserError) as err:
        forgetting.load_probes({"data": str(path)})
    assert err.value.source == f"{path}:2" and words in err.value.message


def test_two_probes_of_one_name_are_refused(tmp_path):
    a = write_jsonl(tmp_path / "general.jsonl", [{"text": "some text"}])
    (tmp_path / "b").mkdir()
    b = write_jsonl(tmp_path / "b" / "general.jsonl", [{"text": "other text"}])
    with pytest.raises(UserError, match="both named 'general'"):
        forgetting.load_probes({"data": [str(a), str(b)]})


def test_max_examples_of_zero_names_its_key(tmp_path):
    a = write_jsonl(tmp_path / "general.jsonl", [{"text": "some text"}])
    with pytest.raises(UserError) as err:
        forgetting.load_probes({"data": str(a), "max_examples": 0})
    assert err.value.source == "eval.forgetting.max_examples"


def test_missing_probe_file_is_named(tmp_path):
    with pytest.raises(UserError) as err:
        forgetting.load_probes({"data": str(tmp_path / "missing.jsonl")})
    assert "no such data file" in err.value.message


def test_compare_flags_worse_by_more_than_one_percent():
    before = {"ppl": {"kind": "perplexity", "perplexity": 10.0, "tokens": 5},
              "mc": {"kind": "multiple_choice", "accuracy": 0.5, "n": 10},
              "zero": {"kind": "multiple_choice", "accuracy": 0.0, "n": 10}}
    after = {"ppl": {"kind": "perplexity", "perplexity": 10.05, "tokens": 5},
             "mc": {"kind": "multiple_choice", "accuracy": 0.6, "n": 10},
             "zero": {"kind": "multiple_choice", "accuracy": 0.1, "n": 10}}
    out = forgetting.compare(before, after)
    assert out["ppl"]["metric"] == "perplexity" and out["ppl"]["relative_change"] == pytest.approx(0.005)
    assert not out["ppl"]["forgot"] and not out["mc"]["forgot"] and not out["zero"]["forgot"]
    assert out["zero"]["relative_change"] is None
    after["ppl"]["perplexity"], after["mc"]["accuracy"] = 10.2, 0.45
    out = forgetting.compare(before, after)
    assert out["ppl"]["forgot"] and out["mc"]["forgot"] and out["mc"]["change"] == pytest.approx(-0.05)
    json.dumps(out)  # goes into eval.json as is


def test_compare_counts_only_a_change_beyond_noise_as_forgetting():
    rng = np.random.default_rng(0)
    tokens = rng.integers(3000, 4000, size=40)
    nll = tokens * rng.normal(3.0, 0.2, size=40)  # per-unit mean NLL around 3 nats
    right = rng.random(100) < 0.3

    def probes(nll_after, right_after):
        return [{"ppl": {"kind": "perplexity", "perplexity": math.exp(n.sum() / tokens.sum()),
                         "tokens": int(tokens.sum()),
                         "units": [[float(a), int(b)] for a, b in zip(n, tokens)]},
                 "mc": {"kind": "multiple_choice", "accuracy": float(r.mean()), "n": 100,
                        "correct": r.astype(int).tolist()}}
                for n, r in ((nll, right), (nll_after, right_after))]

    same = forgetting.compare(*probes(nll, right))
    assert same["ppl"]["p_value"] == 1.0 and same["mc"]["p_value"] == 1.0 and not same["ppl"]["forgot"]
    # Every unit's NLL up by 5%: a clear, consistent rise in perplexity (about +16%).
    worse = forgetting.compare(*probes(nll * 1.05, right & (rng.random(100) < 0.5)))
    assert worse["ppl"]["forgot"] and worse["ppl"]["p_value"] < 0.01
    assert worse["ppl"]["ci_low"] <= worse["ppl"]["change"] <= worse["ppl"]["ci_high"] and worse["ppl"]["ci_low"] > 0
    assert worse["mc"]["forgot"] and worse["mc"]["ci_high"] < 0
    # One question of 100 answered wrongly now: 3% worse, but not more than the noise of 100 questions.
    flipped = right.copy()
    flipped[np.flatnonzero(right)[0]] = False
    noisy = forgetting.compare(*probes(nll, flipped))["mc"]
    assert noisy["relative_change"] < -0.01 and noisy["p_value"] > 0.05 and not noisy["forgot"]
    json.dumps(worse)


def test_forgetting_probes_and_replay_end_to_end(recipe_file, tmp_path):
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": f"this drug helped my pain a lot and it was fine {i}"}
                                                      for i in range(30)])
    mcq = write_jsonl(tmp_path / "mcq.jsonl", [{"question": f"what is the sentiment of this review {i}",
                                               "choices": ["positive", "negative"], "answer": "A"} for i in range(6)])
    path = recipe_file(eval={"systems": ["finetuned"], "forgetting": {"data": [str(general), str(mcq)]}},
                       training={"replay": {"data": str(general), "ratio": 0.25}})
    out = tmp_path / "run"
    code, output = run_cli("train", path, "--out", out, "--quiet")
    assert code == 0, output
    forgetting = json.loads((out / "eval.json").read_text())["forgetting"]
    assert set(forgetting["change"]) == {"general", "mcq"}
    assert forgetting["base"]["general"]["kind"] == "perplexity"
    assert forgetting["finetuned"]["mcq"]["n"] == 6
    change = forgetting["change"]["general"]
    assert change["change"] == pytest.approx(change["after"] - change["before"])
    assert "Forgetting: general ability" in (out / "report.html").read_text()
    # The console names each probe's change with its paired interval; 6 questions still get one.
    assert "p_value" in forgetting["change"]["mcq"]
    assert re.search(r"forgetting: general perplexity [\d.]+ -> [\d.]+ \([+-][\d.]+%\), 95% CI of the change", output)
    assert "verdict: finetuned wins" in output
    # The replayed blocks joined training: 25% of the training examples are general text.
    n_train = sum(1 for _ in open(out / "data" / "train.jsonl"))
    replayed = json.loads((out / "eval.json").read_text())["training"]["replay_examples"]
    assert replayed == round(0.25 / 0.75 * n_train) and replayed > 0
