"""The tensor side of continuous batching: rows join and leave one KV cache between decoding steps.

Rows are left-padded so each row's newest token sits in the last column and one forward extends
them all. A row's position ids count only its own tokens and padding is masked, so a row computes
what it would compute alone, whichever rows share its batch (up to float rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


@dataclass
class Batch:
    """The running rows: their KV cache, attention mask, and the token each feeds next.

    Attributes:
        cache: a ``DynamicCache`` of shape (rows, heads, columns, head_dim) per layer.
        mask: (rows, columns), 1 where a column holds one of the row's own tokens.
        positions: (rows,), the position id of the token each row feeds next.
        last: (rows,), the token each row feeds next (its newest sample); None right after prefill.
    """

    cache: DynamicCache
    mask: torch.Tensor
    positions: torch.Tensor
    last: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return self.mask.size(0)


def prefill(forward, prompts: list[list[int]], pad_id: int, device, cache: DynamicCache) -> tuple[Batch, torch.Tensor]:
    """Encode new prompts (left-padded, one forward); return their batch and next-token logits (rows, vocab)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = forward(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                  use_cache=True, logits_to_keep=1)
    lengths = mask.sum(-1)
    return Batch(out.past_key_values, mask, lengths), out.logits[:, -1].float()


def step(forward, batch: Batch) -> torch.Tensor:
    """Feed every row its newest token; return the next-token logits (rows, vocab)."""
    mask = torch.cat([batch.mask, batch.mask.new_ones(batch.rows, 1)], 1)
    out = forward(input_ids=batch.last[:, None], attention_mask=mask, position_ids=batch.positions[:, None],
                  past_key_values=batch.cache, use_cache=True)
    batch.cache, batch.mask, batch.positions = out.past_key_values, mask, batch.positions + 1
    return out.logits[:, -1].float()


def can_merge(cache: DynamicCache) -> bool:
    """Whether rows can join this cache mid-flight: plain full-attention layers (no sliding window)."""
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def merge(a: Batch, b: Batch) -> Batch:
    """One batch with the rows of ``a`` then ``b``; the shorter one is padded on the left (``last`` None if unset)."""
    width = max(a.mask.size(1), b.mask.size(1))

    def pad(x: torch.Tensor, dim_from_end: int, n: int) -> torch.Tensor:
        return F.pad(x, (0, 0) * dim_from_end + (n, 0)) if n else x

    pa, pb = width - a.mask.size(1), width - b.mask.size(1)
    layers = [(torch.cat([pad(la.keys, 1, pa), pad(lb.keys, 1, pb)]),
               torch.cat([pad(la.values, 1, pa), pad(lb.values, 1, pb)]))
              for la, lb in zip(a.cache.layers, b.cache.layers)]
    return Batch(DynamicCache(ddp_cache_data=layers),
                 torch.cat([pad(a.mask, 0, pa), pad(b.mask, 0, pb)]),
                 torch.cat([a.positions, b.positions]),
                 None if a.last is None or b.last is None else torch.cat([a.last, b.last]))


def select(batch: Batch, keep: list[int], trim: bool) -> Batch:
    """Keep only the rows ``keep``; with ``trim``, drop leading columns that are padding in every row."""
    index = torch.tensor(keep, dtype=torch.long, device=batch.mask.device)
    batch.cache.batch_select_indices(index)
    mask, positions, last = batch.mask[index], batch.positions[index], batch.last[index]
    first = int(mask.any(0).long().argmax()) if trim else 0
    if first:
        mask = mask[:, first:]
        batch.cache = DynamicCache(ddp_cache_data=[(layer.keys[:, :, first:], layer.values[:, :, first:])
                                                   for layer in batch.cache.layers])
    return Batch(batch.cache, mask, positions, last)


MIN_TEMPERATURE = 1e-5
"""Temperatures below this sample greedily (as temperature 0 does).

Dividing by a tinier temperature overflows float32 (logits / 1e-40 is inf, and softmax of inf is
NaN), and between 1e-5 and 0 sampling is already argmax in all but exact ties: two logits would
have to differ by less than about 1e-4 for the runner-up to get even e^-10 of the mass.
"""


def sample(logits: torch.Tensor, temperature: list[float], top_p: list[float],
           generators: list[torch.Generator]) -> list[int | None]:
    """The next token of each row: argmax at temperature 0 (or below ``MIN_TEMPERATURE``), else nucleus sampling.

    Each row draws from its own seeded generator, so a request with a ``seed`` samples the same
    tokens whichever other requests share its batch. Every row is decided on its own: NaN and
    +inf logits (a numerical failure of the model, e.g. an fp16 overflow) are left out and the row
    samples among its finite logits; a row with no finite logit at all gets None, so the engine
    fails that row alone.
    """
    # -inf is an ordinary "never" (a masked token); NaN and +inf carry no usable ranking.
    logits = logits.float().masked_fill(logits.isnan() | logits.isposinf(), -float("inf"))
    chosen: list[int | None] = logits.argmax(-1).tolist()
    for i, ok in enumerate((logits > -float("inf")).any(-1).tolist()):
        if not ok:
            chosen[i] = None
    rows = [i for i, t in enumerate(temperature) if t >= MIN_TEMPERATURE and chosen[i] is not None]
    if not rows:
        return chosen
    # Shift so each row's best logit is 0 before scaling: the scaled values are <= 0 (finite or -inf),
    # so softmax never sees inf and the best token always keeps a positive probability.
    picked = logits[rows].cpu()
    shifted = (picked - picked.max(-1, keepdim=True).values) / torch.tensor([temperature[i] for i in rows])[:, None]
    probs = shifted.softmax(-1)
    ordered, order = probs.sort(-1, descending=True)
    # Drop tokens once the mass before them already reaches top_p; the most likely token always stays
    # (a top_p that rounds to 0 in float32 would otherwise drop every token).
    before = ordered.cumsum(-1) - ordered
    drop = before >= torch.tensor([top_p[i] for i in rows])[:, None]
    drop[:, 0] = False
    ordered = ordered.masked_fill(drop, 0.0)
    for k, i in enumerate(rows):
        chosen[i] = _draw(ordered[k], order[k], generators[i], chosen[i])
    return chosen


def _draw(probs: torch.Tensor, order: torch.Tensor, generator: torch.Generator, fallback: int) -> int:
    """One token from a row's (unnormalised) probabilities; the row's argmax if they cannot be sampled."""
    if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0:
        return fallback
    return int(order[torch.multinomial(probs, 1, generator=generator)])
