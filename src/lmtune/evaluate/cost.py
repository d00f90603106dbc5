"""What each system costs: money per 1,000 queries from its measured token counts, and the one-off
cost of training.

Token counts and latency are measured on the run (``prompt_tokens_mean``, ``completion_tokens_mean``,
``latency_s`` of each system); prices are the recipe's ``eval.cost`` inputs, per 1,000 tokens, so a
few-shot or RAG prompt that is five times longer shows up as five times the prompt cost.
"""

from __future__ import annotations

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
