"""The selection strategies on planted inputs: each picks the records it should, and only those.

Probability matrices, committees and embeddings are built by hand, so what is uncertain (or disputed, or
distinct) is known, and each strategy's own notion of uncertainty is told apart from the others'.
"""

import numpy as np
import pytest

from lmtune.active import diverse, results, strategies
from lmtune.evaluate import metrics


def planted(n_sure: int = 40, uncertain=None, seed: int = 0):
    """``n_sure`` confident rows (0.9 on a random label) with the ``uncertain`` rows placed at random positions;
    returns (probabilities, the positions of the uncertain rows)."""
    rng = np.random.default_rng(seed)
    uncertain = np.asarray(uncertain if uncertain is not None else
                           [[0.34, 0.33, 0.33], [0.4, 0.35, 0.25], [0.45, 0.45, 0.1], [0.5, 0.3, 0.2]])
    sure = np.full((n_sure, 3), 0.05)
    sure[np.arange(n_sure), rng.integers(0, 3, n_sure)] = 0.9
    probs = np.concatenate([sure, uncertain])
    order = rng.permutation(len(probs))
    return probs[order], {int(np.flatnonzero(order == n_sure + i)[0]) for i in range(len(uncertain))}


@pytest.mark.parametrize("name", ["entropy", "margin", "least_confidence"])
def test_each_uncertainty_strategy_picks_the_planted_uncertain_rows(name):
    probs, uncertain = planted()
    picked = strategies.select_top(strategies.uncertainty(name, probs), len(uncertain), seed=0)
    assert set(picked.tolist()) == uncertain


def test_the_three_uncertainties_disagree_where_they_should():
    # Row 0: two labels tied, the third impossible. Row 1: spread over three, the top one ahead.
    probs = np.array([[0.5, 0.5, 0.0], [0.4, 0.3, 0.3]])
    assert strategies.margin(probs).tolist() == pytest.approx([1.0, 0.9])  # the tie is the closest call
    assert strategies.entropy(probs)[1] > strategies.entropy(probs)[0]  # ln 3-ish against ln 2
    assert strategies.least_confidence(probs).tolist() == pytest.approx([0.5, 0.6])
    assert strategies.entropy(np.array([[1 / 3] * 3]))[0] == pytest.approx(np.log(3))


def test_ties_are_broken_by_the_seed_not_by_file_order():
    scores = np.zeros(50)
    first, again, other = (strategies.select_top(scores, 5, seed) for seed in (1, 1, 2))
    assert first.tolist() == again.tolist() and first.tolist() != other.tolist()
    assert first.tolist() != list(range(5))
    # A higher score always wins over the tie-break.
    scores[37] = 1.0
    assert strategies.select_top(scores, 1, seed=1).tolist() == [37]


def test_random_is_seeded_and_uniform():
    a, b, c = strategies.random_scores(2000, 3), strategies.random_scores(2000, 3), strategies.random_scores(2000, 4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0 <= a.min() and a.max() < 1 and abs(a.mean() - 0.5) < 0.03
    # A random pick of 100 from 2000 lands all over the pool, not at its start.
    picked = strategies.select_top(a, 100, 3)
    assert picked.min() < 200 and picked.max() > 1800


def one_hot(labels, k=3, sure=0.8):
    probs = np.full((len(labels), k), (1 - sure) / (k - 1))
    probs[np.arange(len(labels)), labels] = sure
    return probs


def test_committee_ranks_split_votes_first_and_breaks_ties_by_disagreement_in_distribution():
    # Records: 0 unanimous and sure, 1 a 2-1 vote, 2 a three-way split, 3 unanimous but the members' distributions
    # differ (one sure, one hesitant), 4 unanimous and identical.
    zero = one_hot([0, 0, 0, 1, 2])
    few = one_hot([0, 0, 1, 1, 2])
    tuned = one_hot([0, 1, 2, 1, 2])
    tuned[3] = [0.3, 0.4, 0.3]  # still votes 1, far less sure
    scores = strategies.committee([zero, few, tuned])
    assert strategies.select_top(scores, 3, seed=0).tolist() == [2, 1, 3]
    assert scores[2] > scores[1] > scores[3] > scores[0]
    assert scores[0] == pytest.approx(scores[4], abs=1e-12)
    # The vote entropies themselves: a three-way split is ln 3, a 2-1 vote H(2/3, 1/3), agreement 0.
    assert scores[2] == pytest.approx(np.log(3), abs=2e-3) and scores[1] == pytest.approx(0.6365, abs=2e-3)


def test_committee_picks_the_planted_disagreements_out_of_a_pool():
    rng = np.random.default_rng(0)
    n, disputed = 60, [7, 23, 41]
    agreed = rng.integers(0, 3, n)
    members = [one_hot(agreed.copy()) for _ in range(3)]
    for i, row in enumerate(disputed):
        for m, member in enumerate(members):
            member[row] = one_hot([(agreed[row] + m + i) % 3])[0]  # each member votes differently
    picked = strategies.select_top(strategies.committee(members), 3, seed=0)
    assert sorted(picked.tolist()) == disputed


def test_committee_of_texts_scores_disagreement_by_rouge_l():
    a = ["the card has not arrived", "refund please", "same words here", ""]
    b = ["the card has not arrived", "where is my parcel", "same words here too", ""]
    c = ["the card has not arrived yet", "exchange rate question", "same words here", ""]
    scores = strategies.committee_text([a, b, c])
    assert scores[3] == 0.0 and scores[0] < 0.1  # identical (even empty) outputs agree
    assert scores[1] == pytest.approx(1.0)  # no word in common
    assert 0 < scores[2] < scores[1]
    assert strategies.select_top(scores, 1, seed=0).tolist() == [1]


def test_diverse_takes_one_per_cluster_where_entropy_takes_one_cluster():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    embeddings = np.concatenate([c + rng.normal(0, 0.3, (20, 2)) for c in centres])
    cluster = np.repeat([0, 1, 2], 20)
    uncertainty = rng.uniform(0.0, 0.3, 60)
    uncertainty[cluster == 0] += 0.6  # cluster 0 is uncertain all over: plain entropy would take only it
    best = {c: int(np.argmax(np.where(cluster == c, uncertainty, -1))) for c in range(3)}
    assert set(cluster[strategies.select_top(uncertainty, 3, 0)]) == {0}
    picked, ids = diverse.pick(embeddings, uncertainty, 3, seed=0)
    assert sorted(picked.tolist()) == sorted(best.values())  # the most uncertain record of each cluster
    assert len(set(ids.tolist())) == 3 and picked[0] == best[0]  # most uncertain first
    again, _ = diverse.pick(embeddings, uncertainty, 3, seed=[0, 2])  # an arm's (seed, round) seeds it too
    assert sorted(again.tolist()) == sorted(best.values())


def test_diverse_fills_up_when_there_are_fewer_distinct_records_than_picks():
    embeddings = np.array([[0.0, 1.0]] * 6 + [[5.0, 5.0]] * 2)
    uncertainty = np.array([0.1, 0.9, 0.2, 0.3, 0.4, 0.5, 0.8, 0.7])
    picked, ids = diverse.pick(embeddings, uncertainty, 4, seed=0)
    assert len(set(picked.tolist())) == 4
    assert {1, 6} <= set(picked.tolist())  # each of the two distinct groups' best
    assert (ids == -1).sum() == 2  # the other two: the most uncertain left, said as no cluster


def test_candidates_are_the_most_uncertain_ten_per_pick():
    uncertainty = np.arange(100, dtype=float)
    assert sorted(diverse.candidates(uncertainty, 3, 0).tolist()) == list(range(70, 100))
    assert len(diverse.candidates(uncertainty, 20, 0)) == 100


def arms(values_by_seed: dict[int, list[float]], strategy: str, start: int = 10, step: int = 10):
    return [{"strategy": strategy, "seed": seed, "rounds": [
        {"round": r, "n_labelled": start + r * step, "value": v, "ci_low": v - 0.05, "ci_high": v + 0.05,
         "state": "finished"} for r, v in enumerate(values)]} for seed, values in values_by_seed.items()]


def test_curve_means_over_seeds_with_a_t_interval_and_one_seed_keeps_its_bootstrap_interval():
    points = results.curve(arms({0: [0.5, 0.6], 1: [0.52, 0.64], 2: [0.54, 0.62]}, "entropy"))
    assert [p["n_labelled"] for p in points] == [10, 20] and all(p["seeds"] == 3 for p in points)
    assert points[0]["mean"] == pytest.approx(0.52)
    from scipy import stats

    low, high = stats.t.interval(0.95, 2, loc=0.52, scale=np.std([0.5, 0.52, 0.54], ddof=1) / np.sqrt(3))
    assert (points[0]["ci_low"], points[0]["ci_high"]) == pytest.approx((low, high))
    single = results.curve(arms({0: [0.5]}, "random"))
    assert (single[0]["ci_low"], single[0]["ci_high"]) == pytest.approx((0.45, 0.55))


def test_an_interval_over_few_seeds_stays_within_the_metrics_range():
    spread = arms({0: [0.95], 1: [0.55], 2: [0.99]}, "entropy")
    wide = results.curve(spread)[0]
    assert wide["ci_high"] > 1  # Student's t with 2 degrees of freedom
    kept = results.curve(spread, metrics.value_range("f1_macro"))[0]
    assert (kept["ci_low"], kept["ci_high"]) == (pytest.approx(wide["ci_low"]), 1.0)
    assert metrics.value_range("bleu") == (0.0, 100.0) and metrics.value_range("mse")[1] == float("inf")


def test_labels_to_reach_interpolates_between_rounds_and_is_none_when_never_reached():
    points = [{"n_labelled": 10, "mean": 0.4}, {"n_labelled": 20, "mean": 0.5}, {"n_labelled": 30, "mean": 0.7}]
    assert results.labels_to_reach(points, 0.6) == pytest.approx(25.0)
    assert results.labels_to_reach(points, 0.3) == 10.0
    assert results.labels_to_reach(points, 0.8) is None
    assert results.labels_to_reach(points, 0.45, higher=False) == 10.0


def test_the_statement_is_honest_when_no_strategy_beats_random():
    curves = {"entropy": results.curve(arms({0: [0.4, 0.5, 0.55]}, "entropy")),
              "random": results.curve(arms({0: [0.4, 0.5, 0.6]}, "random"))}
    target = {"strategy": "random", "value": 0.6, "n_labelled": 30}
    reach = {s: results.labels_to_reach(p, 0.6) for s, p in curves.items()}
    text = results.statement(curves, reach, target, "f1_macro", True)
    assert "entropy did not reach it within 30 labels" in text and "No strategy saved labels" in text
    better = {**curves, "entropy": results.curve(arms({0: [0.5, 0.7, 0.72]}, "entropy"))}
    reach = {s: results.labels_to_reach(p, 0.6) for s, p in better.items()}
    text = results.statement(better, reach, target, "f1_macro", True)
    assert "entropy reached it with about 15 labels (50% fewer" in text and "interpolated" in text
