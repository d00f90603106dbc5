"""Selection strategies of ``lmtune active``: a score per pool record, higher = label it first.

Each uncertainty strategy is a function of the (n, k) matrix of label probabilities of the scoring model
(plain numpy, so it can be checked on planted matrices without a model):

- ``entropy``: the Shannon entropy of the record's label distribution (Lewis & Gale, 1994, in its usual form).
- ``margin``: 1 - (p1 - p2), the gap between the two most likely labels turned around (Scheffer et al., 2001).
- ``least_confidence``: 1 - p_max.
- ``committee``: query by committee (Seung et al., 1992) over the evaluation systems (zero-shot, few-shot and,
  with a run, fine-tuned): the vote entropy of their predicted labels, with the mean KL divergence of each
  system's distribution from the committee's mean as tie-break (McCallum & Nigam, 1998). For generation tasks:
  1 - the mean pairwise ROUGE-L F between the systems' outputs.
- ``diverse``: uncertainty plus k-means over embeddings (:mod:`lmtune.active.diverse`), so a batch is not N
  near-copies of one confusing record.
- ``random``: seeded uniform scores: the baseline every other strategy has to beat.

:func:`select_top` takes the N highest scores; ties are broken by a seeded permutation, so equal scores never
favour the start of the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
from scipy.special import rel_entr
from scipy.stats import entropy as shannon

#: Every strategy ``--strategy`` takes, in the order ``--help`` lists them.
STRATEGIES = ("entropy", "margin", "least_confidence", "committee", "diverse", "random")
#: Strategies that read label probabilities: classification by label scoring only.
NEEDS_PROBABILITIES = ("entropy", "margin", "least_confidence", "diverse")
#: Strategies that work on a generation task, whose answers have no probabilities.
FOR_GENERATION = ("committee", "random")
#: The weight of committee's KL tie-break (the bounded KL is below 1): far below the smallest gap between two
#: vote entropies of a committee of two or three members (0.46, a 2-1 vote against a three-way split), so it
#: only orders records whose votes split the same way.
KL_WEIGHT = 1e-3


def entropy(probs: np.ndarray) -> np.ndarray:
    """The entropy (nats) of each row's label distribution."""
    return shannon(np.asarray(probs, dtype=np.float64), axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2): near 1 where the two most likely labels are nearly tied."""
    top = np.sort(np.asarray(probs, dtype=np.float64), axis=1)
    if top.shape[1] < 2:
        return np.zeros(len(top))
    return 1.0 - (top[:, -1] - top[:, -2])


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 - the probability of the most likely label."""
    return 1.0 - np.asarray(probs, dtype=np.float64).max(axis=1)


def random_scores(n: int, seed: int | Sequence[int]) -> np.ndarray:
    """Seeded uniform scores in [0, 1)."""
    return np.random.default_rng(seed).random(n)


def vote_entropy(votes: np.ndarray, k: int) -> np.ndarray:
    """The entropy of each record's vote shares: ``votes`` is (members, n) predicted label indices."""
    votes = np.asarray(votes)
    counts = np.stack([(votes == label).sum(axis=0) for label in range(k)], axis=1)
    return shannon(counts / votes.shape[0], axis=1)


def mean_kl_to_consensus(members: Sequence[np.ndarray]) -> np.ndarray:
    """The mean over members of KL(member || mean of the members), per record."""
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in members])
    consensus = stacked.mean(axis=0)
    return rel_entr(stacked, consensus[None]).sum(axis=2).mean(axis=0)


def committee(members: Sequence[np.ndarray]) -> np.ndarray:
    """Disagreement of several systems' (n, k) label probabilities: vote entropy, KL as tie-break.

    The KL term is bounded to [0, 1) (``kl / (1 + kl)``) and weighted by :data:`KL_WEIGHT`, so it orders
    records with the same vote split without ever lifting one over a record with a more split vote.
    """
    if len(members) < 2:
        raise ValueError("a committee needs at least two members")
    k = members[0].shape[1]
    votes = np.stack([np.asarray(p).argmax(axis=1) for p in members])
    kl = mean_kl_to_consensus(members)
    return vote_entropy(votes, k) + KL_WEIGHT * kl / (1.0 + kl)


def committee_text(outputs: Sequence[Sequence[str]]) -> np.ndarray:
    """Disagreement of several systems' generated outputs: 1 - mean pairwise ROUGE-L F per record.

    ``outputs`` holds one list of n texts per system. Two identical outputs agree fully (1.0), two empty
    ones too; ROUGE-L is rouge-score's, with stemming as the evaluation's metrics use it.
    """
    from rouge_score import rouge_scorer

    if len(outputs) < 2:
        raise ValueError("a committee needs at least two members")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    n = len(outputs[0])
    scores = np.empty(n)
    for i in range(n):
        pairs = [(a[i], b[i]) for a, b in combinations(outputs, 2)]
        agree = [1.0 if x.strip() == y.strip() else scorer.score(x, y)["rougeL"].fmeasure for x, y in pairs]
        scores[i] = 1.0 - float(np.mean(agree))
    return scores


def select_top(scores: np.ndarray, n: int, seed: int | Sequence[int]) -> np.ndarray:
    """The indices of the ``n`` highest scores, highest first; equal scores in a seeded random order."""
    scores = np.asarray(scores, dtype=np.float64)
    tiebreak = np.random.default_rng(seed).permutation(len(scores))
    return np.lexsort((tiebreak, -scores))[:n]


def uncertainty(strategy: str, probs: np.ndarray) -> np.ndarray:
    """The score of one of the single-model uncertainty strategies (entropy, margin, least_confidence)."""
    return {"entropy": entropy, "margin": margin, "least_confidence": least_confidence}[strategy](probs)
