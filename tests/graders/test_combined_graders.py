"""multi (OpenAI's formula over sub-graders, evaluated safely) and callable (a function by import path)."""

from __future__ import annotations

import math

import pytest

from lmtune import graders
from lmtune.errors import UserError
from lmtune.recipe_graders import check_formula, parse_graders

EXACT = {"type": "string_check", "input": "{{sample.output_json.name}}", "reference": "{{item.name}}",
         "operation": "eq"}
FUZZY = {"type": "text_similarity", "input": "{{sample.output_text}}", "reference": "{{item.text}}",
         "evaluation_metric": "fuzzy_match"}


def _multi(formula: str, **subs):
    return graders.build({"type": "multi", "name": "combo", "graders": subs or {"name": EXACT, "fuzzy": FUZZY},
                          "calculate_output": formula})


SAMPLES = ['{"name": "Ada"}', '{"name": "Bob"}', "Ada, not JSON"]
ITEMS = [{"name": "Ada", "text": '{"name": "Ada"}'}, {"name": "Ada", "text": "Bob"}, {"name": "Ada", "text": "Ada"}]


@pytest.mark.parametrize(("formula", "combine"), [
    ("(name + fuzzy) / 2", lambda n, f: (n + f) / 2),
    ("0.7 * name + 0.3 * fuzzy ** 2", lambda n, f: 0.7 * n + 0.3 * f ** 2),
    ("fuzzy ^ 2 - name", lambda n, f: f ** 2 - n),  # ^ is a power (as OpenAI writes it), not Python's looser xor
    ("min(name, fuzzy) + max(name, 0.1) * abs(-1)", lambda n, f: min(n, f) + max(n, 0.1)),
    ("sqrt(fuzzy) + exp(name) + log(fuzzy + 1) + floor(fuzzy * 3) + ceil(name)",
     lambda n, f: math.sqrt(f) + math.exp(n) + math.log(f + 1) + math.floor(f * 3) + math.ceil(n)),
])
def test_multi_computes_the_formula_on_each_samples_scores(formula, combine):
    name = graders.build(EXACT).grade(SAMPLES, ITEMS).scores
    fuzzy = graders.build(FUZZY).grade(SAMPLES, ITEMS).scores
    result = _multi(formula).grade(SAMPLES, ITEMS)
    assert result.parts == {"name": name, "fuzzy": fuzzy}
    assert result.scores == pytest.approx([combine(n, f) for n, f in zip(name, fuzzy)])
    assert name == [1.0, 0.0, 0.0] and 0 < fuzzy[1] < 1  # the cases differ: the formula is really exercised
    # the sub-grader's unparsable third sample (not JSON) is counted in the multi grader's result too
    assert result.unparsable == 1


def test_a_formula_that_fails_on_a_sample_scores_it_zero():
    result = _multi("1 / name").grade(SAMPLES, ITEMS)
    assert result.scores == [1.0, 0.0, 0.0] and result.errors == 2
    assert "division by zero" in result.messages[-1]


@pytest.mark.parametrize(("formula", "says"), [
    ("name + nobody", "'nobody' is not a grader"), ("pow(name, 2)", "function 'pow' is not available"),
    ("name if fuzzy else 0", "IfExp"), ("name.real", "Attribute"), ("name > fuzzy", "Compare"),
    ("'text'", "not a number"), ("__import__('os').system('true')", "Attribute"),
    ("__import__('os')", "'__import__' is not available"),
    ("name; fuzzy", "not a formula"), ("fuzzy = 1", "not a formula"), ("max()", "max expected"),
    ("[name, fuzzy]", "List"), ("round(name)", "'round' is not available"),
])
def test_anything_else_in_a_formula_is_a_recipe_error(formula, says):
    with pytest.raises(ValueError, match="calculate_output") as raised:
        check_formula(formula, ["name", "fuzzy"])
    assert says in str(raised.value)


def test_a_formula_error_names_the_multi_graders_key():
    raw = {"combo": {"type": "multi", "graders": {"name": EXACT}, "calculate_output": "name + other"}}
    with pytest.raises(ValueError, match=r"^combo\.calculate_output: 'other' is not a grader"):
        parse_graders(raw)


def test_a_callable_by_import_path_is_called_per_sample(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def length_reward(sample, item):\n"
        "    if item.get('fail'):\n"
        "        raise RuntimeError('cannot score')\n"
        "    return min(len(sample['output_text']) / item['target'], 1.0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    grader = graders.build({"type": "callable", "path": "my_rewards:length_reward"}, name="length")
    result = grader.grade(["abc", "abcdef", "x"], [{"target": 6}, {"target": 6}, {"fail": True}])
    assert result.scores == [0.5, 1.0, 0.0]
    assert result.errors == 1 and result.messages == ["sample 2: RuntimeError: cannot score"]


def test_a_callable_whose_module_is_missing_is_a_user_error():
    with pytest.raises(UserError, match="cannot import 'no_such_package_xyz.rewards'"):
        graders.build({"type": "callable", "path": "no_such_package_xyz.rewards:score"}, source="eval.graders.r")
    with pytest.raises(UserError, match="has no function 'nothing'"):
        graders.build({"type": "callable", "path": "math:nothing"})
