"""Token losses for evaluation: the summed NLL of language-modelling blocks, the unit of perplexity."""

from __future__ import annotations

from lmtune import progress
from lmtune.train.objectives import evaluate_loss


def block_nll(model, blocks: list, pad_id: int, batch_size: int = 8, desc: str = "perplexity",
              quiet: bool = False) -> list[list[float]]:
    """Summed NLL and predicted-token count of each batch of language-modelling blocks.

    ``blocks`` come from ``pack_blocks`` (every label a target but each block's first). One
    ``[nll, tokens]`` pair per batch of ``batch_size`` blocks: perplexity is ``exp`` of the sums'
    ratio, and the pairs are the resampling unit of its bootstrap interval.
    """
    device = next(model.parameters()).device
    units = []
    bar = progress.bar(len(blocks), desc, "block", quiet=quiet)
    for start in range(0, len(blocks), batch_size):
        chunk = blocks[start:start + batch_size]
        tokens = sum(b.n_targets for b in chunk)
        # evaluate_loss is the mean over the chunk's target tokens; times their count, their sum.
        units.append([evaluate_loss(model, chunk, batch_size, pad_id, device) * tokens, tokens])
        bar.update(len(chunk))
    bar.close()
    return units
