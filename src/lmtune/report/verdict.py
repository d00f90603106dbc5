"""The verdict in words: which system wins, whether the lead is significant, what it costs, and, against a
system of comparable quality only, after how many queries fine-tuning pays for its training.

Break-even rule: a count of queries after which fine-tuning has paid for itself is a like-for-like
comparison only when the other system answers about as well. Another system is of *comparable quality*
when the run cannot tell it from the fine-tuned one on the task metric: the paired bootstrap test of the
two finds no significant difference (p >= 0.05); for a run without that test, when its value lies inside
the fine-tuned system's 95% bootstrap interval; for a run without intervals either, when it is within
:data:`TOLERANCE` of the fine-tuned value (relative). Against a significantly weaker system no break-even
is stated: fine-tuning buys quality there, and the sentence says so.
"""

from __future__ import annotations

from lmtune.evaluate import cost
from lmtune.evaluate.metrics import best_systems, higher_is_better
from lmtune.kinds import systems as system_kinds
from lmtune.report import html

#: Relative distance within which two values count as comparable when the fine-tuned one has no interval.
TOLERANCE = 0.05


def summary_sentence(values: dict[str, float], metric: str) -> str:
    """One sentence that ranks systems on ``metric``, derived from the numbers.

    Args:
        values: metric value per system.
        metric: the metric's key; its direction comes from ``higher_is_better``.

    Returns:
        e.g. ``"finetuned has the highest f1_macro (0.71): +0.32 over zero_shot."``
    """
    if len(values) == 1:
        (name, value), = values.items()
        return f"{name}: {metric} = {value:.4g} (the only system evaluated)."
    winners = best_systems(values, metric)
    top = values[winners[0]]
    word = "highest" if higher_is_better(metric) else "lowest"
    who = (f"{winners[0]} has" if len(winners) == 1
           else f"{', '.join(winners[:-1])} and {winners[-1]} tie for")
    link = "over" if higher_is_better(metric) else "vs"
    others = [f"{top - v:+.4g} {link} {name}" for name, v in values.items() if name not in winners]
    return f"{who} the {word} {metric} ({top:.4g})" + (f": {', '.join(others)}." if others else ".")


def verdict_sentences(evaluation: dict, metric: str, load: str = "") -> list[str]:
    """Which system wins on ``metric``, whether that is significant, and what it costs, in plain words.

    Args:
        evaluation: a run's ``eval.json``.
        metric: the task metric.
        load: how loaded the machine was when latency was measured (e.g. ``"at load average 1.3 on 2 CPUs"``).
    """
    results = {k: v for k, v in (evaluation.get("results") or {}).items() if isinstance(v, dict)}
    values = {s: float(r[metric]) for s, r in results.items() if html.is_number(r.get(metric))}
    if not values:
        return []
    winner = best_systems(values, metric)[0]
    w = results[winner]
    ci = (w.get("ci") or {}).get(metric)
    out = [f"{winner} wins on {metric}: {values[winner]:.4g}"
           + (f" (95% CI {ci[0]:.4g} to {ci[1]:.4g})." if ci else ".")]
    rest = {k: v for k, v in values.items() if k != winner}
    if rest:
        runner = best_systems(rest, metric)[0]
        p = _p_value(evaluation, metric, winner, runner)
        test = (f"significant (paired bootstrap p = {p:.3g})" if p is not None and p < 0.05
                else f"not significant (paired bootstrap p = {p:.3g})" if p is not None
                else "not tested for significance")
        out.append(f"Its lead over the runner-up, {runner} ({values[runner]:.4g}), is {test}.")
    if html.is_number(w.get("cost_per_1k_queries")):
        tokens = (f" ({w['prompt_tokens_mean']:.0f} prompt + {w.get('completion_tokens_mean', 0):.1f} completion "
                  "tokens per query") if html.is_number(w.get("prompt_tokens_mean")) else ""
        latency = (f", {1000 * w['latency_s']:.0f} ms per query here{' ' + load if load else ''}"
                   if html.is_number(w.get("latency_s")) else "")
        out.append(f"It costs {w['cost_per_1k_queries']:.4g} per 1,000 queries at the recipe's prices"
                   f"{tokens}{latency}{')' if tokens else ''}.")
    training = evaluation.get("training") or {}
    if system_kinds.is_trained(winner) and html.is_number(training.get("training_cost")):
        out.append(_training_cost(training) + _break_even(evaluation, values, winner, metric) + ".")
    elif any(system_kinds.is_trained(k) for k in values) and not system_kinds.is_trained(winner):
        out.append("Fine-tuning did not beat the best alternative on this metric: keep the cheaper system.")
    return out


def _training_cost(training: dict) -> str:
    return (f"Fine-tuning cost {training['training_cost']:.4g} once ({training.get('training_tokens', 0):,} "
            f"tokens, {training.get('training_wall_s', 0):.0f} s of training here)")


def _break_even(evaluation: dict, values: dict[str, float], tuned: str, metric: str) -> str:
    """The clause after the training cost: break-even against the best comparable system, or why there is none."""
    results, training = evaluation["results"], evaluation["training"]
    others = {k: v for k, v in values.items() if not system_kinds.is_trained(k) and not system_kinds.is_constant(k)}
    if not others:
        return ""
    interval = (results[tuned].get("ci") or {}).get(metric)
    p_values = {k: _p_value(evaluation, metric, tuned, k) for k in others}
    close = {k: v for k, v in others.items() if comparable(v, values[tuned], interval, p_values[k])}
    if not close:
        best = best_systems(others, metric)[0]
        return (f"; no other system is of comparable quality (the best, {best}, has {values[best]:.4g}, "
                f"{_judged(tuned, interval, p_values[best], False)}), so fine-tuning is better in quality and a "
                f"break-even count against a weaker system would not compare like with like"
                + _per_query(results, tuned, best))
    rival = best_systems(close, metric)[0]
    said = (f"; {rival} is of comparable quality ({values[rival]:.4g}, "
            f"{_judged(tuned, interval, p_values[rival], True)})")
    queries = cost.break_even_queries(results[tuned], results[rival], float(training["training_cost"]))
    if queries is None:
        return said + f" and costs no more per query{_per_query(results, tuned, rival)}, so fine-tuning does not pay " \
                      f"for itself against it"
    gap = results[rival]["cost_per_1k_queries"] - results[tuned]["cost_per_1k_queries"]
    return said + f"; at {gap:.4g} less per 1,000 queries, fine-tuning pays for itself after {queries:,.0f} " \
                  f"queries against {rival}"


def comparable(value: float, tuned: float, interval: list | None, p_value: float | None = None) -> bool:
    """Whether ``value`` is of comparable quality to the fine-tuned ``tuned`` (see the module's rule).

    Args:
        value: the other system's task metric.
        tuned: the fine-tuned system's.
        interval: the fine-tuned system's 95% interval, if measured.
        p_value: the paired bootstrap p-value of the two, if tested.
    """
    if html.is_number(p_value):
        return p_value >= 0.05
    if _is_interval(interval):
        return interval[0] <= value <= interval[1]
    return abs(value - tuned) <= TOLERANCE * abs(tuned)


def _judged(tuned: str, interval, p_value, close: bool) -> str:
    """Why a system was judged comparable (``close``) or not, by the first test of the rule that applies."""
    if html.is_number(p_value):
        how = "not significantly different from" if close else "significantly worse than"
        return f"{how} {tuned}'s: paired bootstrap p = {p_value:.3g}"
    if _is_interval(interval):
        return f"{'inside' if close else 'outside'} {tuned}'s 95% interval"
    return f"{'within' if close else 'more than'} {TOLERANCE:.0%} of {tuned}'s value"


def _is_interval(interval) -> bool:
    return isinstance(interval, (list, tuple)) and len(interval) == 2 and all(map(html.is_number, interval))


def _per_query(results: dict, tuned: str, other: str) -> str:
    a, b = results[tuned].get("cost_per_1k_queries"), results[other].get("cost_per_1k_queries")
    if not (html.is_number(a) and html.is_number(b)):
        return ""
    return f" ({a:.4g} per 1,000 queries against {other}'s {b:.4g})"


def _p_value(evaluation: dict, metric: str, a: str, b: str) -> float | None:
    for entry in evaluation.get("significance") or []:
        if entry.get("metric") == metric and {entry.get("a"), entry.get("b")} == {a, b}:
            return entry.get("p_value")
    return None
