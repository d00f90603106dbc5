"""``POST /v1/chat/completions`` and ``POST /v1/completions``, streamed (SSE) or not.

A request becomes one ``Sequence`` per choice (``n`` per prompt), queued on the engine of the
model it names; the handler awaits their text on an asyncio queue that the engine thread feeds.
Streaming sends each decoding step's new text as soon as the step ends, in OpenAI's chunk shapes,
and ends with ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid

import torch
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from jinja2.exceptions import TemplateError  # what transformers' chat templates raise

from lmtune.serve.batching import QueueFull, Sequence
from lmtune.serve.errors import APIError
from lmtune.serve.models import Served
from lmtune.serve.schemas import ChatRequest, CompletionRequest
from lmtune.serve.text import StopText

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request):
    state = request.app.state.lmtune
    served = state.served(body.model)
    try:
        prompt = served.encoder.prompt_ids(body.chat())
    except TemplateError as exc:  # templates refuse some conversations (roles not alternating, ...)
        raise APIError(400, f"The model's chat template refused these messages: {exc}", "messages",
                       "invalid_value") from None
    if not prompt:
        raise APIError(400, "The messages make an empty prompt; give some text.", "messages", "invalid_value")
    return await _generate(state, served, [prompt], body, chat=True, param="messages")


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    state = request.app.state.lmtune
    served = state.served(body.model)
    prompts = body.prompts(served.tokenizer)
    vocab = len(served.tokenizer)
    for prompt in prompts:
        if not prompt:
            raise APIError(400, "The prompt is empty; give some text to complete.", "prompt", "invalid_value")
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise APIError(400, f"Token ids must lie in [0, {vocab}).", "prompt", "invalid_value")
    return await _generate(state, served, prompts, body, chat=False, param="prompt")


async def _generate(state, served: Served, prompts: list[list[int]], body, chat: bool, param: str):
    started = time.perf_counter()
    limit = _max_tokens(served, prompts, body.limit, state.default_max_tokens, param)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    sequences = []
    for p, prompt in enumerate(prompts):
        for j in range(body.n):
            index = p * body.n + j
            seed = (body.seed + j) % 2**64 if body.seed is not None else random.getrandbits(63)
            generator = torch.Generator().manual_seed(seed)
            sequences.append(Sequence(
                prompt=prompt, max_tokens=limit, text=StopText(served.tokenizer, body.stop), eos=served.eos,
                emit=lambda kind, data, i=index: loop.call_soon_threadsafe(events.put_nowait, (i, kind, data)),
                adapter=served.adapter, temperature=body.temperature, top_p=body.top_p, generator=generator))
    if len(sequences) > served.engine.max_queue:
        raise APIError(400, f"This request asks for {len(sequences)} sequences (prompts x n); this server queues at "
                       f"most {served.engine.max_queue}. Send fewer prompts or a smaller n.", "n", "invalid_value")
    try:
        served.engine.submit(sequences)
    except QueueFull as exc:
        state.metrics.rejected.inc()
        raise APIError(429, f"The server is busy ({exc}); retry shortly.", None, "rate_limit_exceeded") from None
    reply = _Reply(body, chat, sum(len(p) for p in prompts), len(sequences))
    finish = lambda: state.metrics.finished("chat" if chat else "completions", body.model,
                                            time.perf_counter() - started, reply.usage)
    if body.stream:
        return StreamingResponse(_stream(reply, events, sequences, finish), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    try:
        while reply.pending:
            reply.take(*await events.get())
    finally:
        for seq in sequences:
            seq.cancelled = True  # no-op once finished; stops the rest if the client went away
    finish()
    return reply.body()


async def _stream(reply: _Reply, events: asyncio.Queue, sequences: list[Sequence], finish):
    try:
        if reply.chat:
            for i in range(reply.count):
                yield _sse(reply.chunk(i, {"role": "assistant", "content": ""}, None))
        while reply.pending:
            index, kind, data = await events.get()
            try:
                reply.take(index, kind, data)
            except APIError as exc:
                yield _sse({"error": {"message": exc.message, "type": "server_error", "param": None, "code": None}})
                return
            if kind == "delta":
                yield _sse(reply.chunk(index, {"content": data["text"]} if reply.chat else data["text"], None))
            elif kind == "done":
                last = not reply.pending
                yield _sse(reply.chunk(index, {} if reply.chat else "", data["finish_reason"],
                                       reply.usage if last else None))
        if reply.body_in.include_usage:
            yield _sse({**reply.head("chat.completion.chunk" if reply.chat else "text_completion"), "choices": [],
                        "usage": reply.usage})
        yield "data: [DONE]\n\n"
        finish()
    finally:
        for seq in sequences:
            seq.cancelled = True


class _Reply:
    """The choices of one request as their events arrive; renders the OpenAI response or chunks."""

    def __init__(self, body, chat: bool, prompt_tokens: int, count: int):
        self.body_in, self.chat, self.count = body, chat, count
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.texts = [""] * count
        self.finish = [None] * count
        self.tokens = [0] * count
        self.prompt_tokens = prompt_tokens
        self.pending = count

    def take(self, index: int, kind: str, data: dict) -> None:
        if kind == "delta":
            self.texts[index] += data["text"]
        elif kind == "done":
            self.finish[index], self.tokens[index] = data["finish_reason"], data["completion_tokens"]
            self.pending -= 1
        else:
            self.pending = 0
            raise APIError(500, data["message"])

    @property
    def usage(self) -> dict:
        completion = sum(self.tokens)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}

    def head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.body_in.model,
                "system_fingerprint": "lmtune"}

    def body(self) -> dict:
        if self.chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": f,
                        "logprobs": None} for i, (t, f) in enumerate(zip(self.texts, self.finish))]
            return {**self.head("chat.completion"), "choices": choices, "usage": self.usage}
        choices = [{"index": i, "text": t, "finish_reason": f, "logprobs": None}
                   for i, (t, f) in enumerate(zip(self.texts, self.finish))]
        return {**self.head("text_completion"), "choices": choices, "usage": self.usage}

    def chunk(self, index: int, delta, finish_reason: str | None, usage: dict | None = None) -> dict:
        if self.chat:
            choice = {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            out = {**self.head("chat.completion.chunk"), "choices": [choice]}
        else:
            choice = {"index": index, "text": delta, "finish_reason": finish_reason, "logprobs": None}
            out = {**self.head("text_completion"), "choices": [choice]}
        if usage is not None:
            out["usage"] = usage
        return out


def _max_tokens(served: Served, prompts: list[list[int]], requested: int | None, default: int, param: str) -> int:
    """The reply length limit; a prompt that leaves no room, or a limit past the context, is a 400."""
    context = served.context_length
    longest = max(len(p) for p in prompts)
    if longest >= context:
        raise APIError(400, f"This model's maximum context length is {context} tokens. However, your {param} "
                       f"resulted in {longest} tokens. Please reduce the length of the {param}.", param,
                       "context_length_exceeded")
    if requested is None:
        return min(default, context - longest)
    if longest + requested > context:
        raise APIError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                       f"{longest + requested} tokens ({longest} in the {param}, {requested} in the completion). "
                       "Please reduce the length of the prompt or of max_tokens.", "max_tokens",
                       "context_length_exceeded")
    return requested


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
