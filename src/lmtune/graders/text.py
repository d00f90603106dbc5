"""``string_check`` and ``text_similarity``: the graders that compare two rendered texts.

Each text-similarity metric is its reference library's sentence-level score, in 0..1:

- ``fuzzy_match``: rapidfuzz's ``fuzz.WRatio`` over ``utils.default_process`` (lower-cased, punctuation
  stripped) / 100, the scorer OpenAI's own python-grader example uses for a fuzzy match;
- ``bleu``: sacrebleu's ``sentence_bleu`` (its defaults: 13a tokens, exp smoothing) / 100;
- ``gleu``: NLTK's ``sentence_gleu`` (Google BLEU), and ``meteor``: NLTK's ``meteor_score`` with WordNet
  synonyms, both over :func:`lmtune.evaluate.metrics.meteor_tokens`, as ``eval.metrics``' METEOR tokenises;
- ``rouge_1`` .. ``rouge_5`` and ``rouge_l``: rouge-score's F-measure with the Porter stemmer, as
  ``eval.metrics``' ROUGE.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from lmtune.evaluate.metrics import meteor_tokens
from lmtune.graders.base import Grader, GradeResult, check_batch, sample_of
from lmtune.graders.templates import Unreadable, render


def _fuzzy(text: str, reference: str) -> float:
    from rapidfuzz import fuzz, utils

    return fuzz.WRatio(text, reference, processor=utils.default_process) / 100.0


def _bleu(text: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(text, [reference]).score / 100.0


def _gleu(text: str, reference: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    return sentence_gleu([meteor_tokens(reference)], meteor_tokens(text))


def _meteor(text: str, reference: str) -> float:
    from nltk.translate.meteor_score import meteor_score

    from lmtune.data import synonyms

    wordnet = synonyms.wordnet(source="eval.graders (meteor)")
    return meteor_score([meteor_tokens(reference)], meteor_tokens(text), wordnet=wordnet)


@functools.cache
def _rouge_scorer(kind: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=True)


def _rouge(kind: str) -> Callable[[str, str], float]:
    def score(text: str, reference: str) -> float:  # rouge-score's argument order: (target, prediction)
        return _rouge_scorer(kind).score(reference, text)[kind].fmeasure
    return score


#: ``evaluation_metric`` -> ``(text, reference) -> score``.
METRICS: dict[str, Callable[[str, str], float]] = {
    "fuzzy_match": _fuzzy, "bleu": _bleu, "gleu": _gleu, "meteor": _meteor,
    **{f"rouge_{n}": _rouge(f"rouge{n}") for n in range(1, 6)}, "rouge_l": _rouge("rougeL"),
}

#: ``operation`` -> ``(input, reference) -> passed``, as OpenAI documents them.
OPERATIONS: dict[str, Callable[[str, str], bool]] = {
    "eq": lambda text, reference: text == reference,
    "ne": lambda text, reference: text != reference,
    "like": lambda text, reference: reference in text,
    "ilike": lambda text, reference: reference.lower() in text.lower(),
}


class _Compared(Grader):
    """A grader of ``compare(rendered input, rendered reference)`` per sample."""

    def __init__(self, name: str, config, compare: Callable[[str, str], float]):
        super().__init__(name)
        self.input, self.reference, self.compare = config.input, config.reference, compare

    def grade(self, samples: list[str], items: list[dict[str, Any]]) -> GradeResult:
        check_batch(samples, items)
        result = GradeResult([0.0] * len(samples))
        for i, (text, item) in enumerate(zip(samples, items)):
            sample = sample_of(text)
            try:
                pair = render(self.input, sample, item), render(self.reference, sample, item)
            except Unreadable as exc:
                result.note("unparsable", i, str(exc))
                continue
            except KeyError as exc:  # a caller that skipped check(): the item lacks a field the templates name
                result.note("errors", i, f"the item has no field {exc.args[0]}")
                continue
            try:
                result.scores[i] = float(self.compare(*pair))
            except Exception as exc:  # a library's failure on one odd text scores that sample 0, counted
                result.note("errors", i, f"{type(exc).__name__}: {exc}")
        return result


def string_check(name: str, config) -> Grader:
    """1 when ``operation`` holds between the rendered input and reference, else 0."""
    passed = OPERATIONS[config.operation]
    return _Compared(name, config, lambda text, reference: 1.0 if passed(text, reference) else 0.0)


def text_similarity(name: str, config) -> Grader:
    """``evaluation_metric`` of the rendered input against the rendered reference."""
    return _Compared(name, config, METRICS[config.evaluation_metric])
