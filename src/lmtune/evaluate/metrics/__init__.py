"""Task metrics, computed by their reference libraries and looked up by name.

Every number here comes from scikit-learn, ``rouge-score``, ``sacrebleu``, NLTK (METEOR) or SciPy,
so that results match what practitioners get from those libraries directly; this package
validates inputs, dispatches by task, turns numpy scalars into plain floats that serialise to
JSON, and keeps, next to each value, the per-example material that
:mod:`lmtune.evaluate.bootstrap` resamples for confidence intervals.

Metrics are a registry (:mod:`.registry`): one :class:`MetricInfo` per metric key names its task
family, the scorer that computes it, its direction and the tasks it is primary for. A scorer is
one library pass (:mod:`.scorer`); they live by task family in :mod:`.classification`,
:mod:`.generation` and :mod:`.regression`. To add a metric, add one entry to :data:`REGISTRY`.
"""

from lmtune.evaluate.metrics.classification import averaged_labels, classification_metrics
from lmtune.evaluate.metrics.generation import meteor_tokens
from lmtune.evaluate.metrics.registry import (
    HIGHER_IS_BETTER,
    METRICS,
    PRIMARY_METRIC,
    REGISTRY,
    TASK_FAMILY,
    MetricInfo,
    best_systems,
    compute_selected,
    generation_metrics,
    higher_is_better,
    known_metrics,
    metric_keys,
    perplexity,
    regression_metrics,
    scored,
    select_metrics,
    value_range,
)
from lmtune.evaluate.metrics.scorer import Scored, Scorer

__all__ = [
    "HIGHER_IS_BETTER", "METRICS", "PRIMARY_METRIC", "REGISTRY", "TASK_FAMILY", "MetricInfo", "Scored", "Scorer",
    "averaged_labels", "best_systems", "classification_metrics", "compute_selected", "generation_metrics",
    "higher_is_better", "known_metrics", "meteor_tokens", "metric_keys", "perplexity", "regression_metrics",
    "scored", "select_metrics", "value_range",
]
