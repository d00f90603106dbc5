"""OpenAI's ``score_model`` grader with a local judge: a causal LM (an alias, a directory, a hub id) loaded
once, prompted with the grader's messages (templates filled per sample), its answer read as a number.

OpenAI's judge answers in a structured output, ``{"result": <number>, ...}``; a local model is asked in
plain words, so the answer is read as that JSON when it is, else as the first number in the text. The score
is clipped to ``range``. An answer with no number scores 0 and is counted as unparsable. Decoding is greedy
unless ``sampling_params.temperature`` is above 0, so the same sample gets the same score every time.
"""

from __future__ import annotations

import json
import re
from typing import Any

import torch

from lmtune.data.encode import Encoder
from lmtune.graders.base import Grader, GradeResult, check_batch, sample_of
from lmtune.graders.templates import Unreadable, render
from lmtune.inference import generation
from lmtune.models import load_causal_lm, pad_id

NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
#: Tokens the judge may write when ``sampling_params.max_completions_tokens`` is not set.
DEFAULT_MAX_TOKENS = 32
#: OpenAI's roles -> the chat template's (``developer`` is its newer name for ``system``).
ROLES = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant"}


def parse_score(text: str) -> float | None:
    """The judge's number: ``result`` (or ``score``) of a JSON object, else the first number in ``text``."""
    try:
        answer = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        answer = None
    if isinstance(answer, dict):
        for key in ("result", "score"):
            if isinstance(answer.get(key), (int, float)) and not isinstance(answer.get(key), bool):
                return float(answer[key])
    found = NUMBER.search(text)
    return float(found.group()) if found else None


class ScoreModelGrader(Grader):
    """A judge model and its prompt; the model is loaded when the grader is built and kept until :meth:`close`."""

    def __init__(self, name: str, config, batch_size: int = 8):
        super().__init__(name)
        self.messages = [(ROLES[m.role], m.text()) for m in config.input]
        self.low, self.high = config.range
        params = config.sampling_params
        self.max_new_tokens = params.max_completions_tokens or DEFAULT_MAX_TOKENS
        self.seed = params.seed
        self.sampling: dict[str, Any] = {}
        if params.temperature:  # 0 or unset: greedy, one answer per prompt
            self.sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p or 1.0}
        self.batch_size = batch_size
        self.model, self.tokenizer, _ = load_causal_lm(config.model)
        self.model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
        context = getattr(self.model.config, "max_position_embeddings", None) or 1 << 30
        self.encoder, self.budget = Encoder(self.tokenizer, context), context - self.max_new_tokens

    def grade(self, samples: list[str], items: list[dict[str, Any]]) -> GradeResult:
        check_batch(samples, items)
        result = GradeResult([0.0] * len(samples))
        prompts: dict[int, list[int]] = {}
        for i, (text, item) in enumerate(zip(samples, items)):
            sample = sample_of(text)
            try:
                messages = [{"role": role, "content": render(content, sample, item)}
                            for role, content in self.messages]
            except Unreadable as exc:
                result.note("unparsable", i, str(exc))
                continue
            except KeyError as exc:
                result.note("errors", i, f"the item has no field {exc.args[0]}")
                continue
            prompts[i] = self.encoder.fit_prompt(self.encoder.prompt_ids(messages), self.budget)[0]
        for i, answer in zip(prompts, self._answers(list(prompts.values()))):
            score = parse_score(answer)
            if score is None:
                result.note("unparsable", i, f"the judge's answer has no number: {answer[:80]!r}")
            else:
                result.scores[i] = min(max(score, self.low), self.high)
        return result

    def _answers(self, prompts: list[list[int]]) -> list[str]:
        if not prompts:
            return []
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):  # the grader's seed leaves the run's random state alone
            if self.seed is not None:
                torch.manual_seed(self.seed)
            texts, _ = generation.generate(self.model, self.tokenizer, prompts, self.max_new_tokens,
                                           pad_id(self.tokenizer), self.batch_size, quiet=True, **self.sampling)
        return texts

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
