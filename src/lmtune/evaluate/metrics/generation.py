"""Scorers of generated text: ROUGE (rouge-score), BLEU and chrF (sacrebleu), METEOR (NLTK), exact match."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer

from lmtune.evaluate.metrics.scorer import Scored, mean_rows

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def _sacrebleu_scored(name: str, metric: Any, references: Sequence[str], predictions: Sequence[str]) -> Scored:
    # What corpus_score() does, keeping the per-segment statistics: corpus BLEU/chrF of a
    # resample is the score of its summed statistics (sacrebleu's own bootstrap does the same).
    stats = metric._extract_corpus_statistics(list(predictions), [list(references)])
    value = float(metric._aggregate_and_compute(stats).score)
    rows = np.asarray(stats, dtype=np.int64).reshape(len(stats), -1)
    return Scored({name: value}, rows, lambda samples: np.array(
        [[metric._compute_score_from_stats(total).score for total in samples.sum(axis=1)]], dtype=float))


def rouge(references, predictions, labels) -> Scored:
    """Mean F-measure of each of :data:`ROUGE_TYPES` (rouge-score, Porter stemmer)."""
    # rougeLsum splits texts into sentences at newlines (rouge-score's convention); on one-line
    # texts it equals rougeL. split_summaries would need NLTK's Punkt data, a download.
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    rows = np.array([[scores[key].fmeasure for key in ROUGE_TYPES]  # argument order: (target, prediction)
                     for scores in (scorer.score(r, p) for r, p in zip(references, predictions, strict=True))])
    return mean_rows({key: float(value) for key, value in zip(ROUGE_TYPES, rows.mean(axis=0))}, rows)


def bleu(references, predictions, labels) -> Scored:
    """Corpus BLEU with sacrebleu's defaults."""
    return _sacrebleu_scored("bleu", sacrebleu.BLEU(), references, predictions)


def chrf(references, predictions, labels) -> Scored:
    """Corpus chrF with sacrebleu's defaults."""
    return _sacrebleu_scored("chrf", sacrebleu.CHRF(), references, predictions)


def meteor_tokens(text: str) -> list[str]:
    """How METEOR tokenises: ``nltk.word_tokenize(text, preserve_line=True)``.

    That is the Treebank-style tokenizer ``word_tokenize`` uses, without its Punkt sentence
    splitter (Punkt is a data download). The only difference: a full stop that ends an inner
    sentence stays on its word. METEOR then lower-cases each token.
    """
    from nltk.tokenize import word_tokenize

    return word_tokenize(text, preserve_line=True)


def meteor(references, predictions, labels) -> Scored:
    """Mean sentence METEOR (NLTK) with WordNet synonyms."""
    from nltk.translate.meteor_score import meteor_score

    from lmtune.data import synonyms

    wordnet = synonyms.wordnet(source="eval.metrics (meteor)")
    rows = np.array([[meteor_score([meteor_tokens(r)], meteor_tokens(p), wordnet=wordnet)]
                     for r, p in zip(references, predictions, strict=True)])
    return mean_rows({"meteor": float(rows.mean())}, rows)


def exact_match(references, predictions, labels) -> Scored:
    """Fraction of predictions equal to their reference, surrounding whitespace ignored."""
    rows = np.array([[float(str(p).strip() == str(r).strip())] for r, p in zip(references, predictions, strict=True)])
    return mean_rows({"exact_match": float(rows.mean())}, rows)
