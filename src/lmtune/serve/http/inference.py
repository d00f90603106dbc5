"""``POST /v1/chat/completions`` and ``POST /v1/completions``, streamed (SSE) or not.

A request becomes one ``Sequence`` per choice (``n`` per prompt), queued on the engine of the
model it names; the handler awaits their text on an asyncio queue that the engine thread feeds.
Streaming sends each decoding step's new text as soon as the step ends, in OpenAI's chunk shapes,
and ends with ``data: [DONE]``. A run's task model (``<run>:task``) is answered by :mod:`.task_api`
instead: the raw input through the run's template, answered as evaluation answered. With an upstream
server (``--engine vllm``) a request that passes the same checks is handed to it (:func:`_upstream`).
"""

from __future__ import annotations

import asyncio
import random
import time

import torch
from fastapi import APIRouter, Request
from jinja2.exceptions import TemplateError  # what transformers' chat templates raise

from lmtune.serve.engine.batching import QueueFull, Sequence
from lmtune.serve.engine.models import Served
from lmtune.serve.engine.task import SUFFIX
from lmtune.serve.engine.text import StopText
from lmtune.serve.errors import APIError
from lmtune.serve.http.replies import Reply, respond
from lmtune.serve.http.schemas import ChatRequest, CompletionRequest
from lmtune.serve.http.task_api import answer_task

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request):
    state = request.app.state.lmtune
    if state.upstream is not None:
        return await _upstream(state, body, request, "/v1/chat/completions")
    served = state.served(body.model)
    if served.task is not None:
        return await answer_task(state, served, body, chat=True)
    _generation_only(body, served)
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
    if state.upstream is not None:
        return await _upstream(state, body, request, "/v1/completions")
    served = state.served(body.model)
    if served.task is not None:
        return await answer_task(state, served, body, chat=False)
    _generation_only(body, served)
    prompts = body.prompts(served.tokenizer)
    vocab = len(served.tokenizer)
    for prompt in prompts:
        if not prompt:
            raise APIError(400, "The prompt is empty; give some text to complete.", "prompt", "invalid_value")
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise APIError(400, f"Token ids must lie in [0, {vocab}).", "prompt", "invalid_value")
    return await _generate(state, served, prompts, body, chat=False, param="prompt")


async def _upstream(state, body, request: Request, path: str):
    """Hand a request that passed lmtune's checks to the upstream server, as the client sent it.

    A chat request without a length limit gets ``--max-tokens``, as lmtune's own engine gives it.
    """
    if body.model not in state.upstream.model_map and body.model.endswith(SUFFIX):
        raise APIError(404, f"The model `{body.model}` (a run's task model) is served by --engine lmtune only; ask "
                       f"`{body.model.removesuffix(SUFFIX)}` instead.", "model", "model_not_found")
    if body.fields is not None:
        raise APIError(400, "'fields' fills a run's prompt template for its task model (<run>:task), which only "
                       "--engine lmtune serves.", "fields", "unsupported_parameter")
    payload = await request.json()  # the body FastAPI parsed, as sent: nothing lmtune does not use is lost
    if path.endswith("/chat/completions") and body.limit is None:
        payload = {**payload, "max_tokens": state.default_max_tokens}
    return await state.upstream.forward(path, payload)


def _generation_only(body, served: Served) -> None:
    """Refuse what only a run's task model answers: log-probabilities of labels, template ``fields``."""
    if body.wants_logprobs:
        raise APIError(400, "'logprobs' is not supported by lmtune serve for generated text; leave it unset (a "
                       "classification run's task model, <run>:task, answers with label log-probabilities).",
                       "logprobs", "unsupported_parameter")
    if body.fields is not None:
        raise APIError(400, f"'fields' fills a run's prompt template: send it to a task model (<run>:task), not "
                       f"`{served.name}`.", "fields", "unsupported_parameter")


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
    reply = Reply(body, chat, sum(len(p) for p in prompts), len(sequences))
    return await respond(state, reply, events, sequences, started)


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
