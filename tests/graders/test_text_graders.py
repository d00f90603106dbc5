"""string_check and text_similarity against their references: OpenAI's documented operations, and each metric
equal to its library's own score on the same strings; templating of sample and item variables."""

from __future__ import annotations

import pytest
import sacrebleu
from nltk.translate.gleu_score import sentence_gleu
from nltk.translate.meteor_score import meteor_score
from rapidfuzz import fuzz, utils
from rouge_score import rouge_scorer

from lmtune import graders
from lmtune.data import synonyms
from lmtune.evaluate.metrics import meteor_tokens
from lmtune.graders.templates import missing_field, render


def _check(operation: str, reference: str = "{{item.answer}}", text: str = "{{sample.output_text}}"):
    return graders.build({"type": "string_check", "name": "check", "input": text, "reference": reference,
                          "operation": operation})


@pytest.mark.parametrize(("operation", "sample", "answer", "expected"), [
    ("eq", "Paris", "Paris", 1.0), ("eq", "paris", "Paris", 0.0), ("eq", "Paris ", "Paris", 0.0),
    ("ne", "paris", "Paris", 1.0), ("ne", "Paris", "Paris", 0.0),
    # like: the input contains the reference, case-sensitive; ilike: the same, ignoring case (OpenAI's guide)
    ("like", "The capital is Paris.", "Paris", 1.0), ("like", "The capital is paris.", "Paris", 0.0),
    ("like", "Paris", "The capital is Paris", 0.0),  # containment, not similarity: the other way round fails
    ("ilike", "THE CAPITAL IS PARIS.", "paris", 1.0), ("ilike", "Lyon", "paris", 0.0),
    # no SQL wildcards: % and _ are characters like any other
    ("like", "Paris", "P%s", 0.0), ("like", "100% sure", "100%", 1.0), ("ilike", "a_b", "A_B", 1.0),
])
def test_string_check_operations(operation, sample, answer, expected):
    result = _check(operation).grade([sample], [{"answer": answer}])
    assert result.scores == [expected] and result.problems == 0


def _similarity(metric: str):
    return graders.build({"type": "text_similarity", "name": "sim", "input": "{{sample.output_text}}",
                          "reference": "{{item.reference}}", "evaluation_metric": metric})


PAIRS = [("the cat sat on the mat and slept all day", "the cat sat on a mat and slept all day"),
         ("a dog barked at night", "the cat sat on the mat"),
         ("The drug helped my pain a lot.", "this drug helped my pain"), ("", "not empty")]


def _expected(metric: str, text: str, reference: str) -> float:
    if metric == "fuzzy_match":
        return fuzz.WRatio(text, reference, processor=utils.default_process) / 100
    if metric == "bleu":
        return sacrebleu.sentence_bleu(text, [reference]).score / 100
    if metric == "gleu":
        return sentence_gleu([meteor_tokens(reference)], meteor_tokens(text))
    if metric == "meteor":
        return meteor_score([meteor_tokens(reference)], meteor_tokens(text), wordnet=synonyms.wordnet())
    kind = "rougeL" if metric == "rouge_l" else metric.replace("_", "")
    return rouge_scorer.RougeScorer([kind], use_stemmer=True).score(reference, text)[kind].fmeasure


@pytest.mark.parametrize("metric", ["fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3",
                                    "rouge_4", "rouge_5", "rouge_l"])
def test_text_similarity_equals_its_library(metric):
    result = _similarity(metric).grade([t for t, _ in PAIRS], [{"reference": r} for _, r in PAIRS])
    assert result.scores == pytest.approx([_expected(metric, t, r) for t, r in PAIRS])
    assert result.scores[0] > result.scores[1] and all(0 <= s <= 1 for s in result.scores)
    assert result.problems == 0


def test_identical_texts_score_one_on_every_metric():
    for metric in ("fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_l"):
        text = "the patient felt much better after two weeks of treatment"
        assert _similarity(metric).grade([text], [{"reference": text}]).scores == pytest.approx([1.0], abs=1e-3)


def test_templates_read_output_json_and_nested_item_fields():
    grader = _check("eq", reference="{{ item.meta.tags[1] }}", text="{{ sample.output_json.answer.city }}")
    items = [{"meta": {"tags": ["x", "Paris"]}}] * 3
    result = grader.grade(['{"answer": {"city": "Paris"}}', '{"answer": {"city": "Lyon"}}', "Paris, not JSON"], items)
    assert result.scores == [1.0, 0.0, 0.0]
    # The output that is not JSON cannot give output_json.answer: scored 0, counted as unparsable, said why.
    assert (result.unparsable, result.errors) == (1, 0)
    assert "sample 2" in result.messages[0] and "not JSON" in result.messages[0]


def test_render_writes_non_text_values_as_json():
    sample = {"output_text": "x", "output_json": None}
    assert render("{{item.n}} {{item.tags}} {{item.ok}}", sample, {"n": 3, "tags": ["a"], "ok": True}) == \
        '3 ["a"] true'
    assert render("{{sample.output_text}}!", sample, {}) == "x!"


def test_missing_field_names_the_first_record_without_it():
    templates = ["{{item.answer}} {{item.meta.id}}"]
    assert missing_field(templates, [{"answer": 1, "meta": {"id": 2}}]) is None
    assert missing_field(templates, [{"answer": 1, "meta": {"id": 2}}, {"answer": 1, "meta": {}}]) == (1, "meta.id")


def test_a_batch_needs_an_item_per_sample():
    with pytest.raises(ValueError, match="2 samples but 1 items"):
        _check("eq").grade(["a", "b"], [{"answer": "a"}])
