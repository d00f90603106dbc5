"""score_model with a local judge: the tiny model of tests/tiny.py, loaded once, prompted through its chat
template; its answer's number parsed and clipped to ``range``, or the sample counted as unparsable; greedy
decoding gives the same scores every time."""

from __future__ import annotations

import pytest
import torch
from tiny import build_model, build_tokenizer

from lmtune import graders
from lmtune.data.encode import Encoder
from lmtune.graders.judge import parse_score
from lmtune.inference import generation

pytestmark = pytest.mark.usefixtures("one_thread")

MESSAGES = [{"role": "developer", "content": "Score the answer from 0 to 10. Reply with the number only."},
            {"role": "user", "content": [{"type": "input_text",
                                          "text": "Answer: {{sample.output_text}}\nReference: {{item.answer}}"}]}]
SAMPLES = ["the movie was great", "awful", "fine", "this drug helped"]
ITEMS = [{"answer": a} for a in ("great", "awful", "it was fine", "helped a lot")]


def _judge(model_dir, **config):
    return graders.build({"type": "score_model", "name": "judge", "model": str(model_dir), "input": MESSAGES,
                          **config})


@pytest.fixture(scope="module")
def seven_judge(tmp_path_factory):
    """The tiny model trained for a few steps to answer "7" (then EOS) to the judge's prompts: a real judge whose
    answer has a number, so parsing and clipping are exercised end to end."""
    tok = build_tokenizer()
    model = build_model(len(tok), seed=0)
    encoder = Encoder(tok, 512)
    prompts = [encoder.prompt_ids([{"role": "system", "content": MESSAGES[0]["content"]},
                                   {"role": "user", "content": f"Answer: {s}\nReference: {i['answer']}"}])
               for s, i in zip(SAMPLES, ITEMS)]
    target = tok("7", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = sum(model(input_ids=torch.tensor([p + target]),
                         labels=torch.tensor([[-100] * len(p) + target])).loss for p in prompts)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    directory = tmp_path_factory.mktemp("seven-judge")
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@pytest.mark.parametrize(("bounds", "expected"), [([0, 10], 7.0), ([0, 5], 5.0), ([8, 10], 8.0)])
def test_the_judges_number_is_the_score_clipped_to_range(seven_judge, bounds, expected):
    result = _judge(seven_judge, range=bounds).grade(SAMPLES, ITEMS)
    assert result.scores == [expected] * len(SAMPLES) and result.problems == 0


def test_a_random_judge_is_parsed_or_counted_and_deterministic(tiny_model_dir):
    judge = _judge(tiny_model_dir, range=[0, 10], sampling_params={"max_completions_tokens": 12})
    first, again = judge.grade(SAMPLES, ITEMS), judge.grade(SAMPLES, ITEMS)
    assert first == again
    # The same prompts through the chat template, decoded greedily here: what the judge must have read.
    tok = judge.tokenizer
    encoder = Encoder(tok, 512)
    prompts = [encoder.prompt_ids([{"role": "system", "content": MESSAGES[0]["content"]},
                                   {"role": "user", "content": f"Answer: {s}\nReference: {i['answer']}"}])
               for s, i in zip(SAMPLES, ITEMS)]
    answers, _ = generation.generate(judge.model, tok, prompts, 12, tok.pad_token_id, quiet=True)
    parsed = [parse_score(a) for a in answers]
    assert first.scores == [0.0 if p is None else min(max(p, 0.0), 10.0) for p in parsed]
    assert first.unparsable == sum(p is None for p in parsed)
    assert all("the judge's answer has no number" in m for m in first.messages)


def test_sampling_with_a_seed_repeats_and_leaves_the_runs_random_state(tiny_model_dir):
    judge = _judge(tiny_model_dir, sampling_params={"temperature": 1.0, "seed": 3, "max_completions_tokens": 6})
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    first = judge.grade(SAMPLES, ITEMS)
    assert torch.equal(torch.rand(3), expected)
    assert judge.grade(SAMPLES, ITEMS) == first


def test_a_sample_without_the_json_its_prompt_needs_is_unparsable(tiny_model_dir):
    judge = graders.build({"type": "score_model", "model": str(tiny_model_dir),
                           "input": [{"role": "user", "content": "Rate {{sample.output_json.answer}}"}]})
    result = judge.grade(["not json", '{"answer": "great"}'], [{}, {}])
    assert result.scores[0] == 0.0 and result.unparsable >= 1
    assert result.messages[0].startswith("sample 0: {{sample.output_json.answer}}: the output is not JSON")


@pytest.mark.parametrize(("answer", "score"), [
    ('{"result": 0.8, "steps": [{"description": "close", "conclusion": "yes"}]}', 0.8), ('{"score": 3}', 3.0),
    ("Score: 7/10", 7.0), ("  -2.5e1 points", -25.0), (".5", 0.5), ("no number at all", None), ("", None),
    ('{"result": "high"}', None),
])
def test_parse_score(answer, score):
    assert parse_score(answer) == score
