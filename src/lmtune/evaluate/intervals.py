"""What a run adds to each system's metrics: bootstrap intervals, and the winner's paired p-values.

``eval_config`` is the recipe's ``eval`` section (``bootstrap`` resamples, ``metrics``).
"""

from __future__ import annotations

from typing import Any

from lmtune.evaluate import bootstrap, graded, metrics
from lmtune.kinds import systems as system_kinds


def with_intervals(result, spec, eval_config, seed: int):
    """Add a bootstrap 95% interval to every metric computed from the system's predictions.

    Perplexity has no per-example predictions: its interval resamples the batches of text blocks.
    """
    rows = result.predictions
    if eval_config.bootstrap and result.nll_units:
        nll, tokens = zip(*result.nll_units)
        interval = bootstrap.perplexity_interval(nll, tokens, n_resamples=eval_config.bootstrap, seed=seed)
        if interval["ci_low"] is not None:
            result.metrics["ci"] = {"perplexity": [interval["ci_low"], interval["ci_high"]]}
        return result
    if not eval_config.bootstrap or not rows or not spec.kind.per_example or not metrics.known_metrics(spec.type):
        return result  # a reward task's answers are scored by graders, whose means get intervals there
    chosen = None if eval_config.metrics == "auto" else eval_config.metrics
    intervals = bootstrap.confidence_intervals(spec.type, [r["reference"] for r in rows],
                                               [r["prediction"] for r in rows], spec.labels, metrics=chosen,
                                               n_resamples=eval_config.bootstrap, seed=seed)
    # Metrics named in eval.metrics are reported even where the task's defaults leave them out.
    result.metrics.update({k: v["value"] for k, v in intervals.items() if k not in result.metrics})
    result.metrics["ci"] = {k: [v["ci_low"], v["ci_high"]] for k, v in intervals.items()
                            if v.get("ci_low") is not None}
    return result


def significance(results: dict[str, Any], spec, eval_config, seed: int) -> list[dict[str, Any]]:
    """Paired bootstrap p-values of the winner on the task metric against every other system (and, with
    ``eval.rank_by``, on that grader's scores: :func:`lmtune.evaluate.graded.significance`)."""
    metric = metrics.PRIMARY_METRIC.get(spec.type)
    scored = {k: v for k, v in results.items() if getattr(v, "predictions", None)
              and isinstance(v.metrics.get(metric), (int, float))}
    ranked = graded.significance(results, eval_config, seed)
    if not eval_config.bootstrap or len(scored) < 2:
        return ranked
    winner = metrics.best_systems({k: v.metrics[metric] for k, v in scored.items()}, metric)[0]
    pairs = [(winner, other) for other in scored if other != winner]
    # A variant is always tested against what it varies (self_trained against finetuned), whoever wins.
    pairs += [(s, base) for s in scored if (base := getattr(system_kinds.find(s), "compared_with", None)) in scored
              and winner not in (s, base)]
    out = []
    for a, b in pairs:
        refs = [r["reference"] for r in scored[a].predictions]
        if len(scored[b].predictions) != len(refs):
            continue
        p = bootstrap.paired_p_value(spec.type, metric, refs, [r["prediction"] for r in scored[a].predictions],
                                     [r["prediction"] for r in scored[b].predictions], spec.labels,
                                     n_resamples=eval_config.bootstrap, seed=seed)
        out.append({"a": a, "b": b, "metric": metric, "p_value": p})
    return out + ranked
