"""Batched generation: greedy or sampled, left padded with the KV cache, with repetition controls and stop strings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
)

from lmtune import progress
from lmtune.inference import row_sampling
from lmtune.models import is_prompt_learning


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
                      row_seeds: Sequence[int] | None = None, **sampling) -> Generated:
    """Greedy decoding (or sampling, with ``do_sample=True`` etc.), batched with left padding and the KV cache.

    A prompt-tuned model is batched only with prompts of its own length: peft drops position ids
    for prompt tuning, so left padding would shift every position of the shorter prompts.

    Args:
        repetition_penalty: transformers' repetition penalty over the tokens generated so far (1.0: off).
        no_repeat_ngram_size: transformers' n-gram blocking within the generated tokens (0: off).
        stop: strings that end a row's generation once its decoded continuation contains one; the
            first one found and everything after it are cut from the text.
        row_seeds: sample prompt ``i`` from a random stream of its own seeded with ``row_seeds[i]``
            (:mod:`lmtune.inference.row_sampling`; ``temperature``, ``top_k`` and ``top_p`` as in ``sampling``),
            so that its tokens do not depend on the prompts batched with it.
    """
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out = Generated([""] * len(prompts), [0] * len(prompts), [[] for _ in prompts], [False] * len(prompts))
    eos = tokenizer.eos_token_id
    bar = progress.bar(len(prompts), desc, "ex", quiet=quiet)
    for idx in _batches(order, [len(p) for p in prompts], batch_size, same_length=_ignores_positions(model)):
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        controls = _controls(tokenizer, width, repetition_penalty, no_repeat_ngram_size, stop)
        options = {"do_sample": False, **controls, **sampling}
        if row_seeds is not None:
            options = row_sampling.options(options, [row_seeds[i] for i in idx])
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
