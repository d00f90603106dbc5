"""The short table printed at the end of a run."""

from __future__ import annotations

from pathlib import Path

from lmtune.run_dir import RunDir

SHOWN = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "rouge1", "rougeL", "bleu", "perplexity")


def summary_table(run_dir: Path) -> str:
    """A plain-text table of every system's metrics, from ``eval.json``."""
    data = RunDir(run_dir).read_eval()
    results = data.get("results", {})
    graded = dict.fromkeys(k for r in results.values() for k in r if k.startswith("graders."))  # eval.graders
    metrics = [m for m in SHOWN if any(m in r for r in results.values())] + list(graded) + ["latency_s"]
    rows = [["system", *metrics]]
    for system, values in results.items():
        rows.append([system] + [_fmt(values.get(m)) for m in metrics])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    training = data.get("training")
    if training:
        lines.append(f"training: {training['train_steps']} steps in {training['train_seconds']} s, "
                     f"{training['train_tokens_per_s']} tokens/s, "
                     f"best validation loss {_fmt(training['best_val_loss'])}" + _memory(training))
    lines.append(f"test examples: {data.get('n')}")
    lines += _forgetting_lines(data)
    if data.get("primary_metric"):
        from lmtune.report.verdict import verdict_sentences

        sentences = verdict_sentences(data, data["primary_metric"])
        if sentences:
            lines.append("verdict: " + " ".join(sentences))
    return "\n".join(lines)


def _forgetting_lines(data: dict) -> list[str]:
    """One line per forgetting probe: before -> after, the change's interval and p, forgot or not."""
    lines = []
    for probe, c in ((data.get("forgetting") or {}).get("change") or {}).items():
        relative = f" ({100 * c['relative_change']:+.1f}%)" if c.get("relative_change") is not None else ""
        tested = (f", 95% CI of the change {c['ci_low']:+.4g} to {c['ci_high']:+.4g}, p = {c['p_value']:.3g}"
                  if c.get("ci_low") is not None and c.get("ci_high") is not None else "")
        lines.append(f"forgetting: {probe} {c['metric']} {c['before']:.4g} -> {c['after']:.4g}{relative}{tested}: "
                     + ("forgotten" if c.get("forgot") else "not forgotten"))
    return lines


def print_summary(run_dir: Path) -> None:
    """Print the table and where the report is."""
    print(summary_table(run_dir))
    print(f"report: {RunDir(run_dir).report.resolve()}")


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _memory(training: dict) -> str:
    """``, peak memory 5,190 MB`` (the largest process's, and how many there were when more than one)."""
    peaks = [p for p in training.get("peak_memory_mb") or [] if isinstance(p, (int, float))]
    if not peaks:
        return ""
    kind = "GPU memory" if training.get("memory_kind") == "cuda" else "memory"
    return f", peak {kind} {max(peaks):,.0f} MB" + (f" per process ({len(peaks)} processes)" if len(peaks) > 1 else "")

