"""Figures for the run report, returned as PNG ``data:`` URIs so the page needs no other file.

Figures are drawn on the Agg canvas directly instead of through ``pyplot``: that needs no
display, keeps no global figure registry that could leak memory in a long-lived server, and
does not switch the backend of a notebook or application that imports lmtune.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_DPI = 110
# One muted palette for every figure, so a split or system keeps its colour across the page.
_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")


def wrap_name(name: str, width: int = 22) -> str:
    """A long system name on several lines, broken after ``: / _ + -`` (``model:org/`` over ``name``)."""
    lines = [""]
    for part in re.split(r"(?<=[:/_+-])", name):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_data_uri(fig: Figure) -> str:
    """Encode a figure as a base64 PNG ``data:`` URI.

    Args:
        fig: the figure to render.

    Returns:
        ``data:image/png;base64,...``
    """
    buffer = io.BytesIO()
    # No "Software" metadata: keeps the PNG bytes stable across matplotlib versions.
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def loss_curves(train: Sequence[tuple[float, float]], validation: Sequence[tuple[float, float]],
                learning_rate: Sequence[tuple[float, float]] = ()) -> str:
    """Train and validation loss against step, with the learning rate in a side panel.

    Args:
        train: ``(step, loss)`` of each logged training step.
        validation: ``(step, loss)`` of each validation pass.
        learning_rate: ``(step, lr)`` pairs; the panel is left out when empty.

    Returns:
        A PNG data URI.
    """
    fig = _figure(9.0 if learning_rate else 7.0, 3.6)
    if learning_rate:
        ax, ax_lr = fig.subplots(1, 2, width_ratios=[3, 1.3])
    else:
        ax, ax_lr = fig.subplots(), None
    if train:
        steps, losses = zip(*train, strict=True)
        ax.plot(steps, losses, color=_COLORS[0], linewidth=1.2, label="train")
    if validation:
        steps, losses = zip(*validation, strict=True)
        ax.plot(steps, losses, color=_COLORS[1], marker="o", linewidth=1.6, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if ax_lr is not None:
        steps, rates = zip(*learning_rate, strict=True)
        ax_lr.plot(steps, rates, color=_COLORS[2], linewidth=1.2)
        ax_lr.set_ylim(bottom=0)  # so a warmup visibly starts from zero
        ax_lr.set_xlabel("step")
        ax_lr.set_title("Learning rate")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax_lr.grid(alpha=0.3)
    return to_data_uri(fig)


def metric_bars(values: Mapping[str, float], metric: str, best: str | None = None,
                intervals: Mapping[str, Sequence[float]] | None = None) -> str:
    """Horizontal bars of one metric per system, the best one highlighted.

    Args:
        values: metric value per system, drawn top to bottom in this order.
        metric: the metric's name, for the axis label.
        best: the system to highlight, if any.
        intervals: ``(low, high)`` 95% confidence interval per system, drawn as error bars.

    Returns:
        A PNG data URI.
    """
    names = list(values)
    # 5 inches: this chart and the cost scatter fit side by side in the report's 1118 px column.
    fig = _figure(5.0, 0.55 * len(names) + 1.1)
    ax = fig.subplots()
    colors = [_COLORS[1] if name == best else _COLORS[0] for name in names]
    positions = np.arange(len(names))
    xerr = None
    if intervals and all(n in intervals for n in names):
        xerr = np.array([[max(values[n] - intervals[n][0], 0.0) for n in names],
                         [max(intervals[n][1] - values[n], 0.0) for n in names]])
    bars = ax.barh(positions, [values[n] for n in names], color=colors, xerr=xerr, capsize=4)
    ax.set_yticks(positions, labels=[wrap_name(n) for n in names])
    ax.invert_yaxis()  # first system on top, as in the table below it
    ax.bar_label(bars, labels=[f"{values[n]:.4g}" for n in names], padding=3)
    ax.set_xlabel(metric)
    ax.margins(x=0.15)
    ax.grid(axis="x", alpha=0.3)
    return to_data_uri(fig)


def confusion_heatmap(matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str,
                      vmax: float | None = None) -> str:
    """A confusion matrix as an annotated heatmap, rows = true label, columns = predicted.

    Args:
        matrix: counts, ``matrix[true][predicted]``.
        labels: label names in matrix order.
        title: the figure title (the system's name).
        vmax: the count that gets the darkest colour; pass the same value for every system so
            that their matrices compare by eye. Defaults to this matrix's largest count.

    Returns:
        A PNG data URI.
    """
    counts = np.asarray(matrix, dtype=float)
    # Three 4-label matrices fit side by side in the page's width (1118 px at 110 dpi).
    size = max(3.0, 0.45 * len(labels) + 1.4)
    fig = _figure(size, size * 0.9)
    ax = fig.subplots()
    vmax = float(vmax if vmax is not None else (counts.max() if counts.size else 1.0)) or 1.0
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=vmax)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels=labels, rotation=30, ha="right")
    ax.set_yticks(ticks, labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(wrap_name(title), fontsize=10)  # a long system name wraps instead of being cut off
    # Dark cells get white text so the counts stay readable.
    for (row, col), value in np.ndenumerate(counts):
        ax.text(col, row, f"{int(value)}", ha="center", va="center",
                color="white" if value > vmax / 2 else "black")
    return to_data_uri(fig)


def length_histogram(lengths: Mapping[str, Sequence[float]], max_length: float | None = None) -> str:
    """Token-length histograms, one outlined series per split on shared bins.

    Args:
        lengths: token count of each example, per split.
        max_length: the truncation limit, drawn as a dashed line when given.

    Returns:
        A PNG data URI.
    """
    fig = _figure(7.0, 3.4)
    ax = fig.subplots()
    everything = np.concatenate([np.asarray(v, dtype=float) for v in lengths.values()])
    bins = np.histogram_bin_edges(everything, bins=min(40, max(5, len(everything) // 5)))
    for i, (split, values) in enumerate(lengths.items()):
        ax.hist(values, bins=bins, histtype="step", linewidth=1.6, color=_COLORS[i % len(_COLORS)],
                label=f"{split} (n={len(values)})")
    if max_length:
        ax.axvline(max_length, color="#222222", linestyle="--", label=f"max_length={max_length:g}")
    ax.set_xlabel("tokens per example")
    ax.set_ylabel("examples")
    ax.set_title("Token lengths")
    ax.grid(alpha=0.3)
    ax.legend()
    return to_data_uri(fig)


def grouped_bars(groups: Mapping[str, Mapping[str, float]], title: str, ylabel: str = "examples") -> str:
    """Grouped bar chart: one group per category, one bar per series (e.g. split).

    Args:
        groups: ``{series: {category: count}}``, e.g. ``{"train": {"positive": 300}}``.
        title: the figure title.

    Returns:
        A PNG data URI.
    """
    series = list(groups)
    categories = list(dict.fromkeys(c for counts in groups.values() for c in counts))
    fig = _figure(max(5.0, 1.1 * len(categories) + 2.5), 3.4)
    ax = fig.subplots()
    width = 0.8 / max(1, len(series))
    positions = np.arange(len(categories))
    for i, name in enumerate(series):
        heights = [float(groups[name].get(c, 0)) for c in categories]
        bars = ax.bar(positions + (i - (len(series) - 1) / 2) * width, heights, width, label=name,
                      color=_COLORS[i % len(_COLORS)])
        ax.bar_label(bars, labels=[f"{h:.4g}" for h in heights], fontsize=8, padding=2)
    ax.set_xticks(positions, labels=categories, rotation=20 if len(categories) > 6 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.margins(y=0.12)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return to_data_uri(fig)


def cost_quality(points: Mapping[str, tuple[float, float]], metric: str, cost_label: str) -> str:
    """:func:`cost_quality_figure` as a PNG data URI."""
    return to_data_uri(cost_quality_figure(points, metric, cost_label))


def cost_quality_figure(points: Mapping[str, tuple[float, float]], metric: str, cost_label: str) -> Figure:
    """Each system as a point: cost per 1,000 queries (x) against its task metric (y).

    Both axes start at zero when their values are not negative: fitted to the data, costs of 0.0690 and
    0.0698 would sit at opposite edges and look as different as 0 and 1; from zero they look 1% apart,
    as they are.

    Args:
        points: ``{system: (cost, metric value)}``.
        metric: the metric's name (y axis).
        cost_label: the x axis label.

    Returns:
        The figure.
    """
    fig = _figure(5.0, 3.8)
    ax = fig.subplots()
    for i, (name, (x, y)) in enumerate(points.items()):
        ax.scatter([x], [y], s=60, color=_COLORS[i % len(_COLORS)], zorder=3, clip_on=False)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
    ax.set_xlabel(cost_label)
    ax.set_ylabel(metric)
    ax.margins(x=0.25, y=0.2)
    xs, ys = [x for x, _ in points.values()], [y for _, y in points.values()]
    if xs and min(xs) >= 0:  # room on the right for the names written beside the points
        ax.set_xlim(0, max(xs) * 1.35 or 1.0)
    if ys and min(ys) >= 0:
        ax.set_ylim(0, max(ys) * 1.15 or 1.0)
    ax.grid(alpha=0.3)
    return fig


def interval_bars(groups: Mapping[str, Mapping[str, float]], metric: str,
                  intervals: Mapping[str, Mapping[str, Sequence[float]]] | None = None) -> str:
    """Horizontal bars of one metric, grouped by system with one colour per run, with 95% intervals.

    Args:
        groups: ``{run: {system: value}}``.
        metric: the metric's name, for the axis label.
        intervals: ``{run: {system: (low, high)}}``; a bar without one has no error bar.

    Returns:
        A PNG data URI.
    """
    runs = list(groups)
    systems = list(dict.fromkeys(s for values in groups.values() for s in values))
    fig = _figure(7.5, 0.32 * len(runs) * len(systems) + 0.4 * len(runs) + 1.4)
    ax = fig.subplots()
    height = 0.8 / max(1, len(runs))
    positions = np.arange(len(systems))
    for i, run in enumerate(runs):
        names = [s for s in systems if s in groups[run]]
        values = [groups[run][s] for s in names]
        spans = (intervals or {}).get(run, {})
        xerr = np.array([[max(v - spans[s][0], 0.0) if s in spans else 0.0 for s, v in zip(names, values)],
                         [max(spans[s][1] - v, 0.0) if s in spans else 0.0 for s, v in zip(names, values)]])
        where = [positions[systems.index(s)] + (i - (len(runs) - 1) / 2) * height for s in names]
        bars = ax.barh(where, values, height, xerr=xerr, capsize=3, label=run, color=_COLORS[i % len(_COLORS)])
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=3, fontsize=8)
    ax.set_yticks(positions, labels=[wrap_name(s) for s in systems])
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.margins(x=0.12)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=min(2, len(runs)), fontsize=8, frameon=False)
    return to_data_uri(fig)


def reliability_diagram(bins: Sequence[Mapping[str, float]], title: str, ece: float,
                        temperature: float | None = None) -> str:
    """:func:`reliability_figure` as a PNG data URI."""
    return to_data_uri(reliability_figure(bins, title, ece, temperature))


def reliability_figure(bins: Sequence[Mapping[str, float]], title: str, ece: float,
                       temperature: float | None = None) -> Figure:
    """A reliability diagram: the accuracy of each confidence bin as a bar against the diagonal of perfect
    calibration, the gap to the bin's mean confidence shaded, as in Guo et al. (2017).

    A bar below the diagonal is a bin whose answers are right less often than the system claims (overconfident);
    the count above each bar says how much of the test set that bin holds, since a gap over three examples
    means little.

    Args:
        bins: the reliability bins of :func:`lmtune.evaluate.calibration.reliability` (``low``, ``high``, ``n``,
            ``confidence``, ``accuracy``); empty bins are absent.
        title: the system's name.
        ece: the expected calibration error, shown in the title.
        temperature: the temperature the probabilities were divided by; shown when it is not 1.

    Returns:
        The figure (one per system: three fit side by side in the report's column).
    """
    fig = _figure(3.4, 3.5)
    ax = fig.subplots()
    lows = [float(b["low"]) for b in bins]
    widths = [float(b["high"]) - float(b["low"]) for b in bins]
    accuracy = [float(b["accuracy"]) for b in bins]
    gap = [float(b["confidence"]) - a for b, a in zip(bins, accuracy)]
    ax.bar(lows, accuracy, widths, align="edge", color=_COLORS[0], edgecolor="white", label="accuracy")
    ax.bar(lows, gap, widths, bottom=accuracy, align="edge", color=_COLORS[3], alpha=0.35, edgecolor=_COLORS[3],
           hatch="//", label="gap to confidence")
    for low, width, b in zip(lows, widths, bins):  # the count above whichever of the two bars is higher
        ax.text(low + width / 2, max(float(b["accuracy"]), float(b["confidence"])) + 0.01, str(int(b["n"])),
                ha="center", va="bottom", fontsize=7)
    ax.plot([0, 1], [0, 1], color="#222222", linestyle="--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    scaled = f", T = {temperature:.3g}" if temperature is not None and temperature != 1 else ""
    ax.set_title(f"{wrap_name(title)}\nECE {ece:.3f}{scaled}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=7)
    return fig
