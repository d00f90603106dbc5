"""The training objective: summed cross-entropy over target tokens only.

For classification-style data the prompt is 100+ tokens and the target 2, yet a plain forward
computes (tokens x vocabulary) logits everywhere. Here the transformer body runs once and the
output layer only at positions that predict a target token, in chunks, so the full logits
tensor never exists. ``full_logits_loss_sum`` is the plain path, kept as the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmtune.data.encode import IGNORE
from lmtune.errors import UserError
from lmtune.models import is_prompt_learning
from lmtune.train.speedups import virtual_token_problems

CHUNK = 4096  # target positions per output-layer chunk


def target_loss_sum(model, batch: dict[str, torch.Tensor], chunk: int = CHUNK) -> torch.Tensor:
    """Sum of next-token cross-entropy over positions that carry a target.

    Returning a sum (not a mean) lets the caller divide by the target tokens of the whole
    optimizer step, so gradient accumulation gives exactly the gradient of the larger batch.
    """
    found = target_states(model, batch)
    if found is None:
        return full_logits_loss_sum(model, batch)
    head, selected, wanted, _ = found
    total = selected.new_zeros((), dtype=torch.float32)
    for i in range(0, wanted.numel(), chunk):
        logits = head(selected[i:i + chunk]).float()
        total = total + F.cross_entropy(logits, wanted[i:i + chunk], reduction="sum")
    return total


def target_states(model, batch: dict[str, torch.Tensor]):
    """Run the transformer body once; return (output layer, hidden states at the positions that predict
    a target, those targets, the (rows, positions-1) target mask), or None when the output layer is not
    a plain linear map of the last hidden state (then use the model's own forward)."""
    parts = loss_parts(model)
    if parts is None:
        return None
    body, head = parts
    hidden = body(**_inputs(batch)).last_hidden_state
    targets = batch["labels"][:, 1:]
    where = targets != IGNORE
    return head, hidden[:, :-1][where], targets[where], where


def full_logits_loss_sum(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The same loss from the model's full logits (reference path; any causal LM).

    Prompt tuning puts its virtual tokens in front of the input, so its logits are longer than
    ``input_ids``: the last ``input_len`` positions are the ones that belong to the input.
    """
    if is_prompt_learning(model):
        _refuse_what_virtual_tokens_break(model, batch)
    out = model(**_inputs(batch))
    logits = out.logits[:, -batch["input_ids"].size(1):][:, :-1, :]
    targets = batch["labels"][:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")


def _refuse_what_virtual_tokens_break(model, batch: dict[str, torch.Tensor]) -> None:
    """The last guard for a batch ``speedups.check`` did not see (the loss called outside the loop)."""
    checkpointing = getattr(model.get_base_model(), "is_activation_checkpointing", False)
    problems = virtual_token_problems(model, checkpointing, "position_ids" in batch)
    if problems:
        raise UserError(problems[0][1], source=problems[0][0], problems=problems)


def _inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model inputs of a batch: an attention mask for padded batches, position ids for packed ones.

    No KV cache: training never reuses it, and transformers only honours packed position ids
    (block-diagonal attention) when there is none.
    """
    return {"use_cache": False, **{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}}


def loss_parts(model):
    """(transformer body, output layer) when logits are a plain linear map of the last hidden state, and the
    two can be called on their own (sharded, each must be its own FSDP unit); else None."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None  # the head does more than a linear map: use the model's own forward
    if is_prompt_learning(model):
        return None  # prompt/prefix tuning add virtual tokens in the wrapper's forward
    body = getattr(base, getattr(base, "base_model_prefix", ""), None)
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if body is None or head is None or body is base:
        return None
    if _sharded(model) and not (_sharded(body) and _sharded(head)):
        return None  # their weights are gathered only by the whole model's forward
    return body, head


def _sharded(module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)
