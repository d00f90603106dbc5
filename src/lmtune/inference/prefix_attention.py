"""Attention of a batch to a prefix every row shares, computed once for all rows, without copying it.

Label scoring runs batches of prompts that all start with the same tokens (system prompt, few-shot
examples). Their cached keys and values are held once, as one row. During a scoring pass the
model's attention is routed here (``config._attn_implementation`` is switched to
:data:`NAME` for the pass): every row's queries meet the shared prefix's keys in one attention
call (the rows stacked, no per-row copy, no repeat of grouped key/value heads, no mask), their
own tokens' keys under the pass's mask in another, and the two are merged through their
log-sum-exps. On CPU both run torch's fused flash-attention kernel, about twice as fast here as
one masked attention over the concatenated keys. Anything this does not cover (soft-capped
logits, attention sinks, sliding windows, a pass without a shared prefix) goes to the model's own
implementation with the prefix concatenated for that layer only.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward

NAME = "lmtune_shared_prefix"
_PASS: contextvars.ContextVar = contextvars.ContextVar("lmtune_shared_prefix", default=None)
_UNCOVERED = ("softcap", "s_aux", "sliding_window")  # attention options the stacked path does not apply


class SharedPrefixLayer(DynamicLayer):
    """One layer's cached prefix (one row), never grown: a pass hands attention only the batch's own keys.

    :func:`shared_prefix_attention` reads the prefix itself; nothing of it is copied per row, and
    what a batch adds is not kept, so the next batch starts from the prefix again.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.keys, self.values = keys, values
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        return key_states, value_states


@dataclass
class _Pass:
    prefix: list[tuple[torch.Tensor, torch.Tensor]]
    original: str  # the model's own attention implementation
    calls: int = 0


@contextlib.contextmanager
def attending(model, prefix: list[tuple[torch.Tensor, torch.Tensor]]):
    """A cache of ``prefix`` (each layer's keys and values, one row) for one pass, attention routed here.

    Raises:
        RuntimeError: after the pass, when not every layer's attention came here (a model whose
            attention bypasses transformers' attention interface would have missed the prefix).
    """
    config = model.config
    state = _Pass(prefix, config._attn_implementation)
    token = _PASS.set(state)
    config._attn_implementation = NAME
    try:
        yield Cache(layers=[SharedPrefixLayer(k, v) for k, v in prefix])
    finally:
        config._attn_implementation = state.original
        _PASS.reset(token)
    if state.calls != len(prefix):
        raise RuntimeError(f"{type(model).__name__}: {state.calls} of {len(prefix)} attention layers used "
                           "transformers' attention interface; the shared prompt prefix cannot be attended")


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention of ``query`` (b, heads, q, d) to the shared prefix and the rows' own tokens.

    ``key``/``value`` are the rows' own tokens (the prefix is the pass's), ``attention_mask`` a
    boolean (b, 1, q, prefix + q) mask whose prefix columns are all true. Each part is a softmax
    attention with its log-sum-exp; the two merge into the softmax over all keys.
    """
    current = _PASS.get()
    if current is None:
        raise RuntimeError(f"{NAME} attention outside a label-scoring pass")
    current.calls += 1
    prefix_keys, prefix_values = current.prefix[module.layer_idx]  # (1, kv heads, P, d)
    if any(kwargs.get(name) is not None for name in _UNCOVERED):
        rows = key.size(0)
        key = torch.cat([prefix_keys.expand(rows, -1, -1, -1), key], -2)
        value = torch.cat([prefix_values.expand(rows, -1, -1, -1), value], -2)
        return _fallback(current.original, module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    b, heads, q, d = query.shape
    kv_heads, n_prefix = prefix_keys.size(1), prefix_keys.size(2)
    group = heads // kv_heads  # query head i reads key/value head i // group
    scale = scaling if scaling is not None else d ** -0.5
    # Prefix: every row's queries stacked against its one copy: (1, kv heads, b * group * q, d).
    stacked = query.reshape(b, kv_heads, group * q, d).transpose(0, 1).reshape(1, kv_heads, b * group * q, d)
    out_prefix, lse_prefix = _attend(stacked, prefix_keys, prefix_values, None, scale)
    out_prefix = out_prefix.view(kv_heads, b, group * q, d).transpose(0, 1).reshape(b, heads, q, d)
    lse_prefix = lse_prefix.view(kv_heads, b, group * q).transpose(0, 1).reshape(b, heads, q)
    # Own tokens, under the mask (small: q keys per row).
    own_keys, own_values = key.repeat_interleave(group, 1), value.repeat_interleave(group, 1)
    out_own, lse_own = _attend(query, own_keys, own_values, attention_mask[:, :, :, n_prefix:], scale)
    lse = torch.logaddexp(lse_prefix, lse_own)
    out = out_prefix.float() * (lse_prefix - lse).exp()[..., None] + out_own.float() * (lse_own - lse).exp()[..., None]
    return out.to(query.dtype).transpose(1, 2).contiguous(), None


def _attend(query, key, value, mask: torch.Tensor | None, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention (same heads for query and key) and the log-sum-exp of each query's scores.

    On CPU, torch's fused flash kernel (the one ``scaled_dot_product_attention`` runs there, which
    also returns the log-sum-exp); elsewhere, plain matrix products.
    """
    # Under autocast, in the precision autocast gives attention (as the model's own sdpa call would get).
    device = query.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype
    query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    additive = None
    if mask is not None:
        additive = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill_(~mask, float("-inf"))
    if query.device.type == "cpu" and _FLASH_CPU is not None:
        out, lse = _FLASH_CPU(query, key, value, 0.0, False, attn_mask=additive, scale=scale)
        return out, lse.float()
    scores = torch.matmul(query, key.transpose(-1, -2)).float().mul_(scale)
    if additive is not None:
        scores = scores + additive
    lse = scores.logsumexp(-1)
    return torch.matmul(scores.sub_(lse[..., None]).exp_().to(value.dtype), value), lse


_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _fallback(original: str, module, query, key, value, attention_mask, scaling, dropout, **kwargs):
    """The model's own attention implementation (its modeling file's eager one, or sdpa) on the concatenated keys."""
    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if original == "eager" and eager is not None:
        additive = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device)
        additive.masked_fill_(~attention_mask, torch.finfo(query.dtype).min)
        return eager(module, query, key, value, additive, scaling=scaling, dropout=dropout, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


AttentionInterface.register(NAME, shared_prefix_attention)
