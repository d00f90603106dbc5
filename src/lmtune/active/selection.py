"""One selection: score the candidate records with a strategy and take the budget's worth, with pre-labels.

Shared by ``lmtune active`` (one queue for a labeller) and the oracle experiment (one round of an arm).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from lmtune.active import diverse, strategies
from lmtune.active.scoring import Answer, Scorer
from lmtune.data.formats import Example


@dataclass
class Choice:
    """What a strategy picked: positions into the candidates, best first, and what the queue shows of each."""

    picked: list[int]
    scores: list[float]  # the strategy's value of each picked record
    prelabels: list[str]  # the scoring system's answer to each picked record
    confidences: list[float | None]  # the (calibrated when fitted) probability of that answer; None for text
    scored: int  # records answered by a model (``random`` answers only those it picked)
    passes: int  # system passes over them (``committee``: one per member)
    seconds: float  # wall time of scoring, embedding and clustering


def choose(scorer: Scorer, examples: list[Example], strategy: str, budget: int, seed) -> Choice:
    """Score ``examples`` by ``strategy`` and pick ``budget`` of them (ties in a ``seed``-ed order).

    ``seed`` may be a sequence (an arm's seed and round), as numpy's generators take it.
    """
    started = time.perf_counter()
    if strategy == "random":
        scores = strategies.random_scores(len(examples), seed)
        picked = strategies.select_top(scores, budget, seed)
        answer = scorer.answer(scorer.primary, [examples[i] for i in picked])
        return _choice(picked, scores, answer, None, len(picked), 1, started)
    if strategy == "committee":
        answers = {s: scorer.answer(s, examples) for s in scorer.committee}
        members = list(answers.values())
        scores = (strategies.committee([a.probs for a in members]) if scorer.classifies
                  else strategies.committee_text([a.predictions for a in members]))
        picked = strategies.select_top(scores, budget, seed)
        return _choice(picked, scores, answers[scorer.primary], picked, len(examples), len(members), started)
    answer = scorer.answer(scorer.primary, examples)
    if strategy == "diverse":
        scores = strategies.entropy(answer.probs)
        pool = diverse.candidates(scores, budget, seed)
        positions, _ = diverse.pick(scorer.embed([examples[i] for i in pool]), scores[pool], budget, seed)
        picked = pool[positions]
    else:
        scores = strategies.uncertainty(strategy, answer.probs)
        picked = strategies.select_top(scores, budget, seed)
    return _choice(picked, scores, answer, picked, len(examples), 1, started)


def _choice(picked, scores: np.ndarray, answer: Answer, answered, scored: int, passes: int, started: float) -> Choice:
    """A :class:`Choice`; ``answered`` maps picked records to rows of ``answer`` (None: its rows are the picks)."""
    rows = list(range(len(picked))) if answered is None else [int(i) for i in picked]
    confidences = ([round(float(answer.probs[r].max()), 4) for r in rows] if answer.probs is not None
                   else [None] * len(rows))
    return Choice([int(i) for i in picked], [round(float(scores[i]), 6) for i in picked],
                  [answer.predictions[r] for r in rows], confidences, scored, passes,
                  time.perf_counter() - started)
