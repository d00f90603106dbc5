"""Model outputs for evaluation: label log-likelihoods, batched greedy generation, token losses."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import (LogitsProcessor, LogitsProcessorList, NoRepeatNGramLogitsProcessor,
                          RepetitionPenaltyLogitsProcessor, StoppingCriteria, StoppingCriteriaList)

from lmtune import progress
from lmtune.methods.peft_base import is_prompt_learning
from lmtune.train.loop import evaluate_loss


def _bar(total: int, desc: str, quiet: bool):
    return progress.bar(total, desc, "ex", quiet=quiet)


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
    bar = _bar(len(pairs), desc, quiet)
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


def common_prefix_length(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with (system prompt, few-shot examples), leaving each at least one own token."""
    if not prompts:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
    return max(n, 0)


@torch.no_grad()
def classify(model, prompts: list[list[int]], label_ids: list[list[int]], pad_id: int, batch_size: int = 8,
             desc: str = "classify", quiet: bool = False) -> tuple[list[int], list[list[float]]]:
    """Pick, for each prompt, the label whose tokens (with EOS) are most likely after it.

    No generation: the shared prompt prefix (system prompt, few-shot examples) is encoded once and
    its KV cache reused; each prompt's own tokens are encoded once per batch; only the label tokens
    are run once per label. The scores equal those of :func:`completion_logprobs`, which scores
    prompt- and prefix-tuned models directly: their forward replaces any KV cache passed in.

    Returns:
        (predicted label index per prompt, log-likelihood of every label per prompt).
    """
    if is_prompt_learning(model):
        flat = completion_logprobs(model, [(p, lab) for p in prompts for lab in label_ids], pad_id, batch_size,
                                   desc, quiet)
        k = len(label_ids)
        scores = [flat[i * k:(i + 1) * k] for i in range(len(prompts))]
        return [max(range(k), key=row.__getitem__) for row in scores], scores
    model.eval()
    device = next(model.parameters()).device
    n_prefix = common_prefix_length(prompts)
    prefix_cache = None
    if n_prefix:
        prefix_cache = model(input_ids=torch.tensor([prompts[0][:n_prefix]], device=device), use_cache=True).past_key_values
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    scores: list[list[float]] = [[] for _ in prompts]
    bar = _bar(len(prompts), desc, quiet)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        rows = _score_batch(model, [prompts[i][n_prefix:] for i in idx], label_ids, n_prefix, prefix_cache, pad_id, device)
        for i, row in zip(idx, rows):
            scores[i] = row
        bar.update(len(idx))
    bar.close()
    return [max(range(len(label_ids)), key=row.__getitem__) for row in scores], scores


def _score_batch(model, suffixes, label_ids, n_prefix, prefix_cache, pad_id, device) -> list[list[float]]:
    """Label log-likelihoods for one batch of prompts that follow a cached common prefix."""
    b, k = len(suffixes), len(label_ids)
    lengths = torch.tensor([len(s) for s in suffixes], device=device)
    ids, mask = _right_pad(suffixes, pad_id, device)
    cache = None
    if prefix_cache is not None:
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(b)
    full_mask = torch.cat([torch.ones(b, n_prefix, dtype=mask.dtype, device=device), mask], 1)
    positions = (n_prefix + torch.arange(ids.size(1), device=device)).expand(b, -1)
    out = model(input_ids=ids, attention_mask=full_mask, position_ids=positions, past_key_values=cache, use_cache=True)
    last = F.log_softmax(out.logits[torch.arange(b, device=device), lengths - 1].float(), -1)
    first = torch.tensor([lab[0] for lab in label_ids], device=device)
    total = last[:, first]  # (b, k): log p(first label token | prompt)
    rest = [lab[1:] for lab in label_ids]
    if any(rest):
        # Feed label tokens but the last; their logits score the label's remaining tokens.
        cache = out.past_key_values
        cache.batch_repeat_interleave(k)
        feed, feed_mask = _right_pad([lab[:-1] or [pad_id] for lab in label_ids] * b, pad_id, device)
        feed_mask = feed_mask * torch.tensor([len(lab) > 1 for lab in label_ids] * b, device=device)[:, None]
        mask2 = torch.cat([full_mask.repeat_interleave(k, 0), feed_mask], 1)
        pos2 = (n_prefix + lengths.repeat_interleave(k))[:, None] + torch.arange(feed.size(1), device=device)
        logits = model(input_ids=feed, attention_mask=mask2, position_ids=pos2, past_key_values=cache).logits.float()
        targets, target_mask = _right_pad([r or [pad_id] for r in rest] * b, pad_id, device)
        target_mask = target_mask * torch.tensor([bool(r) for r in rest] * b, device=device)[:, None]
        width = targets.size(1)
        lp = torch.gather(F.log_softmax(logits[:, :width], -1), 2, targets[:, :, None]).squeeze(-1)
        total = total + (lp * target_mask).sum(-1).view(b, k)
    return total.tolist()


def _right_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, :len(s)] = 1
    return ids.to(device), mask.to(device)


@dataclass
class Generated:
    """What :func:`generate_detailed` produced for each prompt, in prompt order."""

    texts: list[str]  # decoded continuations, special tokens and any stop string (and what follows) cut
    counts: list[int]  # tokens generated (up to EOS or through the stop string)
    tokens: list[list[int]]  # those tokens
    hit_cap: list[bool]  # ran to max_new_tokens without EOS or a stop string


def generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, pad_id: int, batch_size: int = 8,
             desc: str = "generate", quiet: bool = False, **options) -> tuple[list[str], list[int]]:
    """:func:`generate_detailed`, returning (decoded completions, generated token counts) only."""
    out = generate_detailed(model, tokenizer, prompts, max_new_tokens, pad_id, batch_size, desc, quiet, **options)
    return out.texts, out.counts


@torch.no_grad()
def generate_detailed(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, pad_id: int,
                      batch_size: int = 8, desc: str = "generate", quiet: bool = False, *,
                      repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0, stop: Sequence[str] = (),
                      **sampling) -> Generated:
    """Greedy decoding (or sampling, with ``do_sample=True`` etc.), batched with left padding and the KV cache.

    A prompt-tuned model is batched only with prompts of its own length: peft drops position ids
    for prompt tuning, so left padding would shift every position of the shorter prompts.

    Args:
        repetition_penalty: transformers' repetition penalty over the tokens generated so far (1.0: off).
        no_repeat_ngram_size: transformers' n-gram blocking within the generated tokens (0: off).
        stop: strings that end a row's generation once its decoded continuation contains one; the
            first one found and everything after it are cut from the text.
    """
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out = Generated([""] * len(prompts), [0] * len(prompts), [[] for _ in prompts], [False] * len(prompts))
    eos = tokenizer.eos_token_id
    bar = _bar(len(prompts), desc, quiet)
    for idx in _batches(order, [len(p) for p in prompts], batch_size, same_length=_ignores_positions(model)):
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        controls = _controls(tokenizer, width, repetition_penalty, no_repeat_ngram_size, stop)
        options = {"do_sample": False, **controls, **sampling}
        generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                   max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos, **options)
        for row, i in enumerate(idx):
            new = generated[row, width:].tolist()
            ended = eos in new
            if ended:
                new = new[:new.index(eos)]
            text = tokenizer.decode(new, skip_special_tokens=True)
            cut = _cut_at_stop(text, stop)
            if cut is not None:
                # A row stopped by a stop string is padded after it (the rows beside it went on).
                while new and new[-1] == pad_id:
                    new.pop()
                text = cut
            out.texts[i], out.counts[i], out.tokens[i] = text.strip(), len(new), new
            out.hit_cap[i] = not ended and cut is None and len(new) >= max_new_tokens
        bar.update(len(idx))
    bar.close()
    return out


def _controls(tokenizer, width: int, repetition_penalty: float, no_repeat_ngram_size: int,
              stop: Sequence[str]) -> dict:
    """``model.generate`` arguments for the controls that are on, each over the continuation only.

    Whatever the model's own generation config sets for a control that is on is turned off, so
    the recipe's value is the only one applied (transformers refuses a processor given twice).
    """
    processors, options = LogitsProcessorList(), {}
    if repetition_penalty != 1.0:
        processors.append(_Continuation(RepetitionPenaltyLogitsProcessor(repetition_penalty), width))
        options["repetition_penalty"] = 1.0
    if no_repeat_ngram_size:
        processors.append(_Continuation(NoRepeatNGramLogitsProcessor(no_repeat_ngram_size), width))
        options["no_repeat_ngram_size"] = 0
    if processors:
        options["logits_processor"] = processors
    if stop:
        options["stopping_criteria"] = StoppingCriteriaList([_StopStrings(tokenizer, list(stop), width)])
    return options


class _Continuation(LogitsProcessor):
    """A transformers logits processor shown only the generated tokens, not the (left-padded) prompt.

    The prompt is left out so that padding never counts as text (batched rows equal single ones)
    and an answer may quote its prompt (extraction, summaries) however the controls are set.
    """

    def __init__(self, processor: LogitsProcessor, start: int):
        self.processor, self.start = processor, start

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.processor(input_ids[:, self.start:], scores)


class _StopStrings(StoppingCriteria):
    """Ends each row once its decoded continuation contains a stop string.

    Decoded text, not token ids: a stop string such as ``"\n\n"`` has many tokenizations.
    """

    def __init__(self, tokenizer, stop: list[str], start: int):
        self.tokenizer, self.stop, self.start = tokenizer, stop, start

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
        done = [_cut_at_stop(text, self.stop) is not None for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _cut_at_stop(text: str, stop: Sequence[str]) -> str | None:
    """``text`` up to the first stop string in it; None when it holds none."""
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[:min(found)] if found else None


def _batches(order: list[int], lengths: list[int], batch_size: int, same_length: bool) -> list[list[int]]:
    """Consecutive runs of ``order`` of at most ``batch_size``; with ``same_length``, never mixing lengths."""
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and (not same_length or lengths[batches[-1][0]] == lengths[i]):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _ignores_positions(model) -> bool:
    """Prompt tuning and its kin (not prefix tuning) drop position ids in peft's forward."""
    return is_prompt_learning(model) and model.active_peft_config.peft_type != "PREFIX_TUNING"
