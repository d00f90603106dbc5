"""Tokenization: prompt tokens masked out of the loss, EOS after every target, truncation counted."""

from __future__ import annotations

from dataclasses import dataclass

from lmtune.errors import UserError

IGNORE = -100


@dataclass
class Encoded:
    """One tokenized example: ``labels`` is IGNORE on prompt positions."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def n_targets(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


class Encoder:
    """Turns rendered examples into token ids the same way for training and evaluation.

    Args:
        tokenizer: a transformers tokenizer.
        max_length: tokens per example; longer ones are truncated and counted.
        use_chat_template: wrap messages in the tokenizer's chat template when it has one.
    """

    def __init__(self, tokenizer, max_length: int, use_chat_template: bool = True):
        self.tok = tokenizer
        self.max_length = max_length
        self.chat = bool(use_chat_template and getattr(tokenizer, "chat_template", None))
        self.eos = tokenizer.eos_token_id
        if self.eos is None:
            raise UserError("the tokenizer has no EOS token; targets could never end", source="model")

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the prompt, ending where the model should start its reply."""
        if not messages:
            bos = self.tok.bos_token_id
            return [bos] if bos is not None and bos != self.eos else []
        if self.chat:
            text = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return self.tok(text, add_special_tokens=False)["input_ids"]
        text = "\n\n".join(m["content"] for m in messages) + "\n"
        return self.tok(text)["input_ids"]

    def target_ids(self, completion: str) -> list[int]:
        """Token ids of the reply, with EOS appended so generation learns to stop."""
        return self.tok(completion, add_special_tokens=False)["input_ids"] + [self.eos]

    def encode(self, messages: list[dict[str, str]], completion: str, lm: bool = False) -> Encoded:
        """Tokenize one example; for language modelling every token is a target."""
        prompt, target = self.prompt_ids(messages), self.target_ids(completion)
        if lm:
            ids = (prompt + target)
            truncated = len(ids) > self.max_length
            ids = ids[: self.max_length]
            return Encoded(ids, [IGNORE] + ids[1:], truncated)  # the first token has nothing to be predicted from
        prompt, target, truncated = self.fit(prompt, target)
        return Encoded(prompt + target, [IGNORE] * len(prompt) + target, truncated)

    def fit_prompt(self, prompt: list[int], budget: int) -> tuple[list[int], bool]:
        """Shorten a prompt (middle out) to ``budget`` tokens; say whether it was cut."""
        if len(prompt) <= budget:
            return prompt, False
        head = min(budget // 4, 64)
        return prompt[:head] + prompt[len(prompt) - (budget - head):], True

    def fit(self, prompt: list[int], target: list[int]) -> tuple[list[int], list[int], bool]:
        """Shorten prompt (middle out) then target so both fit ``max_length``.

        The head of the prompt (chat header, instructions) and its tail (the question and the
        assistant turn marker) matter most, so tokens are dropped from the middle.
        """
        budget = self.max_length
        if len(prompt) + len(target) <= budget:
            return prompt, target, False
        min_prompt = min(len(prompt), budget // 2)
        if len(target) > budget - min_prompt:
            target = target[: budget - min_prompt]
        prompt, _ = self.fit_prompt(prompt, budget - len(target))
        return prompt, target, True


def pack_blocks(encoder: Encoder, documents: list[tuple[list[dict[str, str]], str]], block_size: int) -> list[Encoded]:
    """Continued pre-training data: documents (each ending in EOS) concatenated and cut into blocks.

    As in transformers' ``run_clm`` example: no text is truncated away and no position is padding;
    the last, shorter block is kept. Every token is a target except each block's first, which has
    nothing before it to be predicted from (so token counts are the predicted tokens).
    """
    stream: list[int] = []
    for messages, text in documents:
        stream += encoder.prompt_ids(messages) + encoder.target_ids(text)
    return [Encoded(stream[i:i + block_size], [IGNORE] + stream[i + 1:i + block_size])
            for i in range(0, len(stream), block_size) if len(stream[i:i + block_size]) > 1]
