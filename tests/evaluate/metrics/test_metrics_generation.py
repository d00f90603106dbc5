"""Generation metrics (``lmtune.evaluate.metrics.generation``) equal their reference libraries on fixed inputs:
rouge-score, sacrebleu, NLTK's METEOR with WordNet."""

from __future__ import annotations

import pytest
import sacrebleu
from metric_cases import GEN_PREDS, GEN_REFS, LSUM_PREDS, LSUM_REFS
from nltk.tokenize import word_tokenize
from nltk.translate.meteor_score import meteor_score
from rouge_score import rouge_scorer

from lmtune.data import synonyms
from lmtune.evaluate import metrics


def test_generation_matches_rouge_score_and_sacrebleu():
    result = metrics.generation_metrics(GEN_REFS, GEN_PREDS)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred) for ref, pred in zip(GEN_REFS, GEN_PREDS, strict=True)]
    for key in ("rouge1", "rouge2", "rougeL"):
        expected = sum(s[key].fmeasure for s in scores) / len(scores)
        assert result[key] == pytest.approx(expected)
        assert 0.0 <= result[key] <= 1.0
    assert result["bleu"] == pytest.approx(sacrebleu.corpus_bleu(GEN_PREDS, [GEN_REFS]).score)


def test_generation_identical_text_is_perfect():
    result = metrics.generation_metrics(GEN_REFS, GEN_REFS)
    assert result["rougeL"] == pytest.approx(1.0)
    assert result["bleu"] == pytest.approx(100.0)


def test_every_rouge_matches_rouge_score():
    result = metrics.generation_metrics(LSUM_REFS, LSUM_PREDS)
    assert list(result) == ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "chrf", "meteor", "exact_match"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    scores = [scorer.score(ref, pred) for ref, pred in zip(LSUM_REFS, LSUM_PREDS, strict=True)]
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert result[key] == pytest.approx(sum(s[key].fmeasure for s in scores) / len(scores), abs=1e-12)
    assert result["rougeLsum"] != pytest.approx(result["rougeL"])


def test_bleu_and_chrf_match_sacrebleu():
    result = metrics.generation_metrics(LSUM_REFS, LSUM_PREDS)
    assert result["bleu"] == sacrebleu.corpus_bleu(LSUM_PREDS, [LSUM_REFS]).score
    assert result["chrf"] == sacrebleu.corpus_chrf(LSUM_PREDS, [LSUM_REFS]).score


def test_meteor_matches_nltk():
    result = metrics.generation_metrics(LSUM_REFS, LSUM_PREDS)
    reader = synonyms.wordnet()
    meteor = [meteor_score([word_tokenize(r, preserve_line=True)], word_tokenize(p, preserve_line=True),
                           wordnet=reader) for r, p in zip(LSUM_REFS, LSUM_PREDS, strict=True)]
    assert result["meteor"] == pytest.approx(sum(meteor) / len(meteor), abs=1e-12)


def test_exact_match_ignores_surrounding_whitespace_only():
    result = metrics.generation_metrics(LSUM_REFS, LSUM_PREDS)
    assert result["exact_match"] == 0.0
    assert metrics.generation_metrics(["a b", " yes "], ["a b", "yes"])["exact_match"] == 1.0


def test_meteor_uses_wordnet_synonyms():
    # "pill" matches "tablet" only through WordNet (same synset); "cake" matches nothing.
    def meteor(prediction):
        return metrics.compute_selected("generation", ["i took one tablet daily"], [prediction],
                                        metrics=["meteor"])["meteor"]

    assert meteor("i took one cake daily") < meteor("i took one pill daily") <= meteor("i took one tablet daily")
