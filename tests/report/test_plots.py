"""The report's figures (``lmtune.report.plots``)."""

from __future__ import annotations

from lmtune.report import plots


def test_cost_scatter_axis_does_not_magnify_noise():
    points = {"zero_shot": (0.0690, 0.21), "finetuned": (0.0694, 0.56), "finetuned+rag": (0.0698, 0.51)}
    ax = plots.cost_quality_figure(points, "f1_macro", "cost per 1,000 queries").axes[0]
    low, high = ax.get_xlim()
    assert low == 0.0 and high >= 0.0698  # costs 1% apart look 1% apart, not edge to edge
    low, high = ax.get_ylim()
    assert low == 0.0 and high >= 0.56


def test_cost_scatter_axis_keeps_a_real_spread_and_never_goes_below_zero():
    # A real spread keeps its own range, but a cost axis never goes below zero.
    spread = {"majority": (0.0, 0.1), "few_shot": (0.23, 0.69), "rag": (0.14, 0.41)}
    ax = plots.cost_quality_figure(spread, "f1_macro", "cost").axes[0]
    assert ax.get_xlim()[0] == 0.0 and ax.get_xlim()[1] > 0.23
