"""The log-likelihood of a completion after its prompt, one padded sequence per (prompt, completion) pair."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmtune import progress


@torch.no_grad()
def completion_logprobs(model, pairs: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 8,
                        desc: str = "score", quiet: bool = False) -> list[float]:
    """Sum of log p(completion | prompt) for each (prompt_ids, completion_ids) pair.

    Pairs are processed longest first so each padded batch wastes little; results come back
    in input order. Logits are aligned to the input's last positions: prompt tuning prepends
    virtual tokens, so its logits are longer than the input.
    """
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    out = [0.0] * len(pairs)
    bar = progress.bar(len(pairs), desc, "ex", quiet=quiet)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        seqs = [pairs[i][0] + pairs[i][1] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        target = torch.zeros_like(ids, dtype=torch.bool)
        for row, (i, s) in enumerate(zip(idx, seqs)):
            ids[row, :len(s)] = torch.tensor(s)
            mask[row, :len(s)] = 1
            target[row, len(pairs[i][0]):len(s)] = True
        ids, mask, target = ids.to(device), mask.to(device), target.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -ids.size(1):][:, :-1].float()
        logp = torch.gather(F.log_softmax(logits, -1), 2, ids[:, 1:, None]).squeeze(-1)
        sums = (logp * target[:, 1:]).sum(-1).tolist()
        for i, value in zip(idx, sums):
            out[i] = value
        bar.update(len(idx))
    bar.close()
    return out
