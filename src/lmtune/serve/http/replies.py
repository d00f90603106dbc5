"""The OpenAI response of a completion request: its choices as events arrive, whole or as SSE chunks.

``Reply`` collects each choice's text from ``("delta" | "done" | "error", data)`` events (the engine's,
or a task model's answers) and renders ``chat.completion``/``text_completion`` bodies or chunks;
``stream`` sends the chunks as server-sent events, ending with ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi.responses import StreamingResponse

from lmtune.serve.errors import APIError


async def respond(state, reply: Reply, events: asyncio.Queue, sequences: list, started: float):
    """The response to a completion request: ``reply`` streamed as its events arrive, or whole once all have.

    ``sequences`` (the engine's rows of the request) are cancelled when the request ends early.
    """
    def finish():
        state.metrics.finished("chat" if reply.chat else "completions", reply.body_in.model,
                               time.perf_counter() - started, reply.usage)

    if reply.body_in.stream:
        return StreamingResponse(stream(reply, events, sequences, finish), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    try:
        while reply.pending:
            reply.take(*await events.get())
    finally:
        for seq in sequences:
            seq.cancelled = True  # no-op once finished; stops the rest if the client went away
    finish()
    return reply.body()


async def stream(reply: Reply, events: asyncio.Queue, sequences: list, finish):
    """SSE chunks of ``reply`` as ``events`` arrive; ``sequences`` are cancelled when the client goes away."""
    try:
        if reply.chat:
            for i in range(reply.count):
                yield sse(reply.chunk(i, {"role": "assistant", "content": ""}, None))
        while reply.pending:
            index, kind, data = await events.get()
            try:
                reply.take(index, kind, data)
            except APIError as exc:
                yield sse({"error": {"message": exc.message, "type": "server_error", "param": None, "code": None}})
                return
            if kind == "delta":
                yield sse(reply.chunk(index, {"content": data["text"]} if reply.chat else data["text"], None))
            elif kind == "done":
                last = not reply.pending
                yield sse(reply.chunk(index, {} if reply.chat else "", data["finish_reason"],
                                       reply.usage if last else None))
        if reply.body_in.include_usage:
            yield sse({**reply.head("chat.completion.chunk" if reply.chat else "text_completion"), "choices": [],
                        "usage": reply.usage})
        yield "data: [DONE]\n\n"
        finish()
    finally:
        for seq in sequences:
            seq.cancelled = True


class Reply:
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
        self.extras: list[dict] = [{} for _ in range(count)]  # more keys of each choice (label probabilities)

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
                        "logprobs": None, **self.extras[i]} for i, (t, f) in enumerate(zip(self.texts, self.finish))]
            return {**self.head("chat.completion"), "choices": choices, "usage": self.usage}
        choices = [{"index": i, "text": t, "finish_reason": f, "logprobs": None, **self.extras[i]}
                   for i, (t, f) in enumerate(zip(self.texts, self.finish))]
        return {**self.head("text_completion"), "choices": choices, "usage": self.usage}

    def chunk(self, index: int, delta, finish_reason: str | None, usage: dict | None = None) -> dict:
        extras = self.extras[index] if finish_reason is not None else {}  # sent with the choice's last chunk
        if self.chat:
            choice = {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None, **extras}
            out = {**self.head("chat.completion.chunk"), "choices": [choice]}
        else:
            choice = {"index": index, "text": delta, "finish_reason": finish_reason, "logprobs": None, **extras}
            out = {**self.head("text_completion"), "choices": [choice]}
        if usage is not None:
            out["usage"] = usage
        return out



def sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
