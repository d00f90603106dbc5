"""Self-training (``training.self_training``): pseudo-label a pool with the fine-tuned model, train again.

To be written (issue #17).
"""

from __future__ import annotations


def run_rounds(run) -> None:
    """The rounds of ``training.self_training``; nothing when the recipe has none."""
    if run.recipe.training.self_training is None:
        return
    raise NotImplementedError("training.self_training")
