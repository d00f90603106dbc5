"""The verdict in words (``lmtune.report.verdict``): who wins, whether the lead is significant, what it costs,
and after how many queries fine-tuning pays for itself, against a system of comparable quality only."""

from __future__ import annotations

from lmtune.report.verdict import summary_sentence, verdict_sentences


def test_summary_sentence_of_one_system():
    assert summary_sentence({"a": 0.5}, "accuracy") == \
        "a: accuracy = 0.5 (the only system evaluated)."


def test_summary_sentence_of_a_tie():
    assert summary_sentence({"a": 0.5, "b": 0.5, "c": 0.25}, "accuracy") == \
        "a and b tie for the highest accuracy (0.5): +0.25 over c."


def _priced() -> dict:
    """finetuned beats few_shot, significantly (p = 0.002), at a fifth of its cost per query."""
    return {"results": {
        "zero_shot": {"f1_macro": 0.2, "cost_per_1k_queries": 0.05, "prompt_tokens_mean": 120,
                      "completion_tokens_mean": 2},
        "few_shot": {"f1_macro": 0.4, "cost_per_1k_queries": 0.25, "prompt_tokens_mean": 760,
                     "completion_tokens_mean": 2},
        "finetuned": {"f1_macro": 0.55, "ci": {"f1_macro": [0.5, 0.6]}, "cost_per_1k_queries": 0.05,
                      "prompt_tokens_mean": 120, "completion_tokens_mean": 2, "latency_s": 0.2}},
        "significance": [{"a": "finetuned", "b": "few_shot", "metric": "f1_macro", "p_value": 0.002}],
        "training": {"training_cost": 1.0, "training_tokens": 300000, "training_wall_s": 600}}


def test_verdict_names_the_winner_its_significance_and_cost():
    evaluation = _priced()
    text = " ".join(verdict_sentences(evaluation, "f1_macro"))
    assert "finetuned wins on f1_macro: 0.55 (95% CI 0.5 to 0.6)" in text
    assert "few_shot (0.4), is significant (paired bootstrap p = 0.002)" in text
    # few_shot is significantly worse (p = 0.002): no break-even against it, and the page says why.
    assert "no other system is of comparable quality" in text and "pays for itself" not in text


def test_verdict_states_the_break_even_against_a_system_of_comparable_quality():
    evaluation = _priced()
    # Of comparable quality (p >= 0.05): 0.2 less per 1,000 queries, training (1.0) pays after 5,000 queries.
    evaluation["significance"][0]["p_value"] = 0.3
    assert "pays for itself after 5,000 queries" in " ".join(verdict_sentences(evaluation, "f1_macro"))


def test_verdict_says_when_fine_tuning_did_not_win():
    evaluation = _priced()
    evaluation["significance"][0]["p_value"] = 0.3
    evaluation["results"]["few_shot"]["f1_macro"] = 0.9
    assert "did not beat" in " ".join(verdict_sentences(evaluation, "f1_macro"))


def _evaluation(few_shot_f1: float) -> dict:
    return {"results": {
        "zero_shot": {"f1_macro": 0.19, "cost_per_1k_queries": 0.0447},
        "few_shot": {"f1_macro": few_shot_f1, "cost_per_1k_queries": 0.2292},
        "finetuned": {"f1_macro": 0.56, "ci": {"f1_macro": [0.52, 0.605]}, "cost_per_1k_queries": 0.0459}},
        "training": {"training_cost": 0.9, "training_tokens": 300000, "training_wall_s": 640}}


def test_no_break_even_against_a_system_outside_the_interval():
    text = " ".join(verdict_sentences(_evaluation(0.2), "f1_macro"))  # a third of finetuned's F1, 5x the cost
    assert "pays for itself" not in text
    assert "no other system is of comparable quality (the best, few_shot, has 0.2, outside finetuned's 95% " \
        "interval), so fine-tuning is better in quality" in text


def test_break_even_against_a_system_inside_the_interval():
    text = " ".join(verdict_sentences(_evaluation(0.54), "f1_macro"))
    # 0.1833 less per 1,000 queries than few_shot, whose 0.54 lies inside finetuned's interval.
    assert "pays for itself after 4,910 queries against few_shot" in text
    assert "few_shot is of comparable quality (0.54, inside finetuned's 95% interval)" in text


def test_a_significant_difference_is_not_comparable_quality():
    # The paired test, where the run has it, decides: a significant difference is not comparable quality.
    evaluation = _evaluation(0.54)
    evaluation["significance"] = [{"a": "finetuned", "b": "few_shot", "metric": "f1_macro", "p_value": 0.01}]
    text = " ".join(verdict_sentences(evaluation, "f1_macro"))
    assert "pays for itself" not in text and "significantly worse than finetuned's: paired bootstrap p = 0.01" in text
