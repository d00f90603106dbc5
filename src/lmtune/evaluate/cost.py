"""What each system costs: money per 1,000 queries from its measured token counts, and the one-off
cost of training.

Token counts and latency are measured on the run (``prompt_tokens_mean``, ``completion_tokens_mean``,
``latency_s`` of each system); prices are the recipe's ``eval.cost`` inputs, per 1,000 tokens, so a
few-shot or RAG prompt that is five times longer shows up as five times the prompt cost. Latency depends
on what else the machine was doing, so each system's result records the load it was measured under
(``measured_at``, see :func:`machine_load`) and the report prints it beside the latencies.
"""

from __future__ import annotations

import os
from typing import Any


def per_query(result: dict[str, Any], prices: dict[str, float]) -> dict[str, float]:
    """Cost of 1,000 queries of a system, and the hours 1,000 queries take at its measured latency."""
    prompt = float(result.get("prompt_tokens_mean") or 0.0)
    completion = float(result.get("completion_tokens_mean") or 0.0)
    cost = prompt * prices["prompt_per_1k_tokens"] + completion * prices["completion_per_1k_tokens"]
    out = {"cost_per_1k_queries": round(cost, 6)}
    if result.get("latency_s") is not None:
        out["hours_per_1k_queries"] = round(float(result["latency_s"]) * 1000 / 3600, 4)
    return out


def training(tokens: int, seconds: float, prices: dict[str, float]) -> dict[str, float]:
    """One-off fine-tuning cost: tokens processed (every epoch) times the training price, and wall time."""
    return {"training_tokens": int(tokens), "training_cost": round(tokens / 1000 * prices["training_per_1k_tokens"], 6),
            "training_wall_s": round(float(seconds), 1)}


def break_even_queries(finetuned: dict[str, Any], other: dict[str, Any], training_cost: float) -> float | None:
    """Queries after which fine-tuning's saving per query has paid for its training (None: it never does)."""
    saving = (other.get("cost_per_1k_queries", 0.0) - finetuned.get("cost_per_1k_queries", 0.0)) / 1000
    if saving <= 0:
        return None
    return training_cost / saving


def machine_load() -> dict[str, Any]:
    """The machine's load now, to record with a latency just measured: ``{"load_avg_1m", "cpu_count"}``.

    The one-minute load average includes the evaluation itself (about one per busy core it used); a
    value well above the CPU count means other work competed with it. None where the OS has no load average.
    """
    try:
        load = round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):  # Windows has no getloadavg
        load = None
    return {"load_avg_1m": load, "cpu_count": os.cpu_count()}


def load_text(measured: list[dict[str, Any]]) -> str:
    """``"at load average 1.3 (1 min) on 2 CPUs"`` for the ``measured_at`` records of some systems; "" for none."""
    loads = sorted(m["load_avg_1m"] for m in measured if isinstance(m.get("load_avg_1m"), (int, float)))
    if not loads:
        return ""
    cpus = {m.get("cpu_count") for m in measured if m.get("cpu_count")}
    where = f" on {cpus.pop()} CPUs" if len(cpus) == 1 else ""
    level = f"{loads[0]:.3g}" if loads[0] == loads[-1] else f"{loads[0]:.3g} to {loads[-1]:.3g}"
    return f"at load average {level} (1 min){where}"
