"""The grader objects of a recipe: OpenAI's JSON shapes parse unchanged, and every problem is one error naming
its key path under ``eval.graders``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lmtune.errors import UserError
from lmtune.evaluate.metrics import higher_is_better
from lmtune.lifecycle.grading import primary_metric
from lmtune.recipe import recipe_from_dict
from lmtune.recipe_graders import (
    MultiGrader,
    PythonGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TextSimilarityGrader,
    parse_graders,
)

# OpenAI's examples, as its graders guide and API reference write them.
OPENAI = {
    "city": {"type": "string_check", "name": "Example string check grader", "input": "{{sample.output_text}}",
             "reference": "{{item.reference_answer}}", "operation": "ilike"},
    "close": {"type": "text_similarity", "name": "Example text similarity grader", "input": "{{sample.output_text}}",
              "reference": "{{item.reference_answer}}", "pass_threshold": 0.8, "evaluation_metric": "fuzzy_match"},
    "code": {"type": "python", "name": "Example python grader", "image_tag": "2025-05-08",
             "source": "from rapidfuzz import fuzz, utils\n\ndef grade(sample, item) -> float:\n"
                       "    output_text = sample['output_text']\n    reference = item['reference_answer']\n"
                       "    return fuzz.WRatio(output_text, reference, processor=utils.default_process) / 100.0\n"},
    "judge": {"type": "score_model", "name": "Example score model grader", "model": "smollm2-135m-instruct",
              "input": [{"role": "user", "content": [{"type": "input_text", "text": "Score how close the reference "
                         "answer is to the model answer on a 0-1 scale. Return only the score.\n\nReference answer: "
                         "{{item.reference_answer}}\n\nModel answer: {{sample.output_text}}"}]}],
              "sampling_params": {"temperature": 1, "top_p": 1, "seed": 42, "reasoning_effort": "low"},
              "range": [0, 1]},
    "both": {"type": "multi", "name": "example multi grader",
             "graders": {"name": {"name": "name_grader", "type": "text_similarity",
                                  "input": "{{sample.output_json.name}}", "reference": "{{item.name}}",
                                  "evaluation_metric": "fuzzy_match", "pass_threshold": 0.9},
                         "email": {"name": "email_grader", "type": "string_check",
                                   "input": "{{sample.output_json.email}}", "reference": "{{item.email}}",
                                   "operation": "eq"}},
             "calculate_output": "(name + email) / 2"},
}


def test_openais_grader_objects_parse_unchanged():
    parsed = parse_graders(OPENAI)
    assert [type(g) for g in parsed.values()] == [StringCheckGrader, TextSimilarityGrader, PythonGrader,
                                                  ScoreModelGrader, MultiGrader]
    assert parsed["judge"].input[0].text().startswith("Score how close")
    assert parsed["judge"].range == (0.0, 1.0) and parsed["judge"].sampling_params.seed == 42
    assert parsed["code"].timeout_s == 10.0  # OpenAI-like default time limit per sample
    assert set(parsed["both"].graders) == {"name", "email"}


def _recipe(graders, **eval_section) -> dict:
    return {"name": "r", "model": "m", "task": {"type": "generation"}, "data": {"train": "d.jsonl"},
            "eval": {"graders": graders, **eval_section}}


@pytest.mark.parametrize(("graders", "where", "says"), [
    ({"city": {**OPENAI["city"], "reference": "{{ ref.answer }}"}}, "eval.graders.city.reference",
     "the namespaces are sample and item"),
    ({"city": {**OPENAI["city"], "input": "{{sample.output_tools}}"}}, "eval.graders.city.input",
     "lmtune's samples are plain text completions"),
    ({"city": {**OPENAI["city"], "operation": "regex"}}, "eval.graders.city.operation", "'eq', 'ne', 'like'"),
    ({"city": {**OPENAI["city"], "extra": 1}}, "eval.graders.city.extra", "unknown key"),
    ({"city": {k: v for k, v in OPENAI["city"].items() if k != "operation"}}, "eval.graders.city.operation",
     "required key is missing"),
    ({"city": {"input": "x"}}, "eval.graders.city.type", "required key is missing"),
    ({"judge": {**OPENAI["judge"], "range": [1, 0]}}, "eval.graders.judge.range", "low end must be below"),
    ({"judge": {**OPENAI["judge"], "input": [{"role": "user", "content": [{"type": "input_text",
                                                                           "text": "{{x}}"}]}]}},
     "eval.graders.judge.input.0.content.0.text", "template variable {{x}}"),
    ({"code": {"type": "python", "source": "def grade(sample, item)\n    return 1"}}, "eval.graders.code.source",
     "not valid Python (line 1"),
    ({"code": {"type": "python", "source": "x = 1", "file": "g.py"}}, "eval.graders.code.source", "one of them"),
    ({"both": {**OPENAI["both"], "graders": {"name": {**OPENAI["city"], "input": "{{bad}}"}}}},
     "eval.graders.both.graders.name.input", "template variable {{bad}}"),
    ({"both": {**OPENAI["both"], "calculate_output": "name * 2 + email.real"}},
     "eval.graders.both.calculate_output", "Attribute is not available"),
])
def test_each_problem_names_its_key_path(graders, where, says):
    with pytest.raises(UserError) as raised:
        recipe_from_dict(_recipe(graders))
    assert raised.value.source == where and says in raised.value.message, str(raised.value)


def test_rank_by_names_a_grader_and_sets_the_primary_metric():
    recipe = recipe_from_dict(_recipe({"city": OPENAI["city"]}, rank_by="city"))
    assert primary_metric(recipe) == "graders.city"
    assert primary_metric(recipe_from_dict(_recipe({"city": OPENAI["city"]}))) == "rougeL"
    with pytest.raises(UserError) as raised:
        recipe_from_dict(_recipe({"city": OPENAI["city"]}, rank_by="town"))
    assert raised.value.source == "eval.rank_by" and "'town' is not a grader" in raised.value.message


def test_a_grader_key_is_a_plain_name():
    with pytest.raises(UserError) as raised:
        recipe_from_dict(_recipe({"exact answer": OPENAI["city"]}))
    assert raised.value.source == "eval.graders" and "plain name" in raised.value.message


def test_grader_means_rank_higher_first_whatever_their_name():
    assert higher_is_better("graders.error_free") and higher_is_better("graders.loss_aware")


def test_the_readme_example_parses():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Graders"):]
    example = yaml.safe_load(section[section.index("```yaml") + 7:section.index("```", section.index("```yaml") + 7)])
    recipe = recipe_from_dict({"name": "r", "model": "m", "task": {"type": "generation"},
                               "data": {"train": "d.jsonl"}, **example})
    assert set(recipe.eval.graders) == {"exact", "close", "has_units", "judge", "both", "mine"}
    assert recipe.eval.rank_by == "close"
