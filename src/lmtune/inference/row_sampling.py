"""Sampling in which every row draws from a random stream of its own: what a row samples depends on its prompt, its
seed and the model, not on the rows batched beside it, their order or padding, or the number of processes.

A batched ``generate(do_sample=True)`` draws all rows from one generator (``torch.multinomial`` over the whole
batch), so one prompt's completions change with the prompts it is batched with. GRPO shards a micro-batch's
prompts over the processes, and 2 processes x 2 prompts must sample what 1 process x 4 does.

Here each row's next token is the argmax of its processed logits plus Gumbel noise drawn from the row's own
``torch.Generator`` (the Gumbel-max trick: the argmax of ``logits + G``, with ``G`` i.i.d. standard Gumbel, is a
draw from ``softmax(logits)``). Temperature, top-k and top-p are transformers' own warpers, applied first as in its
sampling; a token they filter out (-inf) is never drawn. Generation itself then runs greedy (``do_sample=False``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

_SAMPLING = ("do_sample", "temperature", "top_k", "top_p")


def options(generate_options: dict, seeds: Sequence[int]) -> dict:
    """``model.generate`` options that sample row ``i`` with ``seeds[i]``, from options that asked for sampling.

    The sampling options (``temperature``, ``top_k``, ``top_p``) become warpers placed after the controls already in
    ``logits_processor`` (repetition penalty and n-gram blocking act before sampling, as in transformers), followed
    by the rows' noise.
    """
    chosen = {k: generate_options[k] for k in _SAMPLING if k in generate_options}
    rest = {k: v for k, v in generate_options.items() if k not in _SAMPLING}
    processors = LogitsProcessorList(rest.get("logits_processor") or [])
    temperature, top_k, top_p = chosen.get("temperature", 1.0), chosen.get("top_k", 0), chosen.get("top_p", 1.0)
    if temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k:
        processors.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    processors.append(RowNoise(seeds))
    # Greedy generation applies no warper of the model's generation config: the ones above are the only ones.
    return {**rest, "logits_processor": processors, "do_sample": False}


class RowNoise(LogitsProcessor):
    """Adds standard Gumbel noise to each row's scores from that row's generator (seeded with ``seeds[row]``).

    A row's ``t``-th generated token uses its stream's ``t``-th draw of ``vocabulary`` uniforms, whatever else
    is batched. The generators live on the scores' device, created at the first call.
    """

    def __init__(self, seeds: Sequence[int]):
        self.seeds = list(seeds)
        self._generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._generators is None:
            if len(self.seeds) != scores.size(0):
                raise ValueError(f"{len(self.seeds)} seeds for {scores.size(0)} rows")
            self._generators = [torch.Generator(device=scores.device).manual_seed(s) for s in self.seeds]
        uniform = torch.stack([torch.rand(scores.size(1), generator=g, device=scores.device, dtype=torch.float32)
                               for g in self._generators])
        tiny = torch.finfo(torch.float32).tiny
        return scores.float() - torch.log(-torch.log(uniform.clamp(min=tiny)))
