"""The endpoints' side of a run's task model (``<run>:task``): raw inputs in, evaluation's answers out.

``/v1/chat/completions`` takes the last user message as the raw input and ``/v1/completions`` each
prompt string; a template's other fields come in lmtune's ``fields``. A classification answer is the
label text itself, with ``label_probabilities`` ({label: probability}, summing to 1) on each choice
and, when ``logprobs`` is asked for, the same in OpenAI's ``logprobs`` shape (each label as one
"token"). Sampling options are refused: a task model answers as evaluation did (label scoring, or
greedy decoding with ``eval.generation``), so its answers are the ones ``eval.json`` scored.
"""

from __future__ import annotations

import asyncio
import math
import time

from lmtune.errors import UserError
from lmtune.inference.label_scoring import log_probabilities
from lmtune.models import pad_id
from lmtune.serve.engine import task as tasks
from lmtune.serve.errors import APIError
from lmtune.serve.http.replies import Reply, respond


async def answer_task(state, served, body, chat: bool):
    """Answer a chat or completion request to a task model; the response is OpenAI's, streamed or not."""
    started = time.perf_counter()
    task, engine = served.task, served.engine
    _check_options(body, served)
    texts = _chat_input(body) if chat else _completion_inputs(body)
    if len(texts) * body.n > engine.max_queue:
        raise APIError(400, f"This request asks for {len(texts) * body.n} answers (prompts x n); this server takes "
                       f"at most {engine.max_queue}. Send fewer prompts or a smaller n.", "n", "invalid_value")
    examples = [task.example(text, body.fields, "messages" if chat else "prompt") for text in texts]
    spec = task.spec(engine.device, None if task.classifies else _limit(body, served))
    prompts = tasks.prompts(engine.model, served.encoder, spec, examples)
    answers = await (_classified if task.classifies else _generated)(served, spec, prompts, body, chat)
    reply = Reply(body, chat, sum(len(p) for p in prompts), len(texts) * body.n)
    events: asyncio.Queue = asyncio.Queue()
    for p, (text, tokens, finish, extra) in enumerate(answers):
        for j in range(body.n):  # the answer is deterministic: n copies of it
            index = p * body.n + j
            reply.extras[index] = extra
            events.put_nowait((index, "delta", {"text": text}))
            events.put_nowait((index, "done", {"finish_reason": finish, "completion_tokens": tokens}))
    return await respond(state, reply, events, [], started)


async def _classified(served, spec, prompts: list[list[int]], body, chat: bool) -> list[tuple]:
    """(label, label tokens, "stop", choice extras) per prompt, by evaluation's label scoring."""
    labels = spec.labels
    label_ids = [served.encoder.target_ids(label) for label in labels]
    pad = pad_id(served.tokenizer)
    answers = []
    for start in range(0, len(prompts), spec.batch_size):  # one evaluation batch per engine call
        call = tasks.classify_call(spec, served.adapter, prompts[start:start + spec.batch_size], label_ids, pad)
        best, scores = await _in_engine(served.engine, call)
        for chosen, row in zip(best, scores):
            logps = log_probabilities(row)
            extra = {"label_probabilities": {label: math.exp(lp) for label, lp in zip(labels, logps)}}
            if body.wants_logprobs:
                extra["logprobs"] = _logprobs(chat, labels, logps, chosen, body.top_k)
            answers.append((labels[chosen], len(label_ids[chosen]), "stop", extra))
    return answers


async def _generated(served, spec, prompts: list[list[int]], body, chat: bool) -> list[tuple]:
    """(text, generated tokens, finish reason, {}) per prompt, by evaluation's greedy generation."""
    pad = pad_id(served.tokenizer)
    answers = []
    for start in range(0, len(prompts), spec.batch_size):
        call = tasks.generate_call(spec, served.adapter, served.tokenizer, prompts[start:start + spec.batch_size],
                                   pad, body.stop or [])
        out = await _in_engine(served.engine, call)
        answers += [(text, count, "length" if cap else "stop", {})
                    for text, count, cap in zip(out.texts, out.counts, out.hit_cap)]
    return answers


async def _in_engine(engine, fn):
    """Run ``fn(engine)`` in the engine thread, between decoding steps, without blocking the event loop."""
    try:
        return await asyncio.wrap_future(engine.call(fn))
    except UserError as exc:  # label scoring refuses a prompt it cannot fit in memory
        raise APIError(400, exc.message, None, "invalid_value") from None


def _logprobs(chat: bool, labels: list[str], logps: list[float], chosen: int, top_k: int) -> dict:
    """Label log-probabilities in OpenAI's ``logprobs`` shape (chat or completions), each label one token."""
    top = sorted(range(len(labels)), key=lambda j: -logps[j])[:top_k]
    if not chat:
        return {"tokens": [labels[chosen]], "token_logprobs": [logps[chosen]],
                "top_logprobs": [{labels[j]: logps[j] for j in top}], "text_offset": [0]}

    def entry(j: int) -> dict:
        return {"token": labels[j], "logprob": logps[j], "bytes": list(labels[j].encode())}
    return {"content": [{**entry(chosen), "top_logprobs": [entry(j) for j in top]}], "refusal": None}


def _check_options(body, served) -> None:
    """Refuse options a task model cannot honour rather than answer differently from what was asked."""
    run = served.name.removesuffix(tasks.SUFFIX)
    for name, neutral in (("temperature", 0.0), ("top_p", 1.0)):
        if name in body.model_fields_set and getattr(body, name) != neutral:
            raise APIError(400, f"`{served.name}` answers as the run was evaluated (label scoring or greedy "
                           f"decoding), so it does not sample: leave '{name}' unset (or {neutral:g}), or ask "
                           f"`{run}` to sample.", name, "unsupported_parameter")
    if body.wants_logprobs and not served.task.classifies:
        raise APIError(400, f"'logprobs' are given for the labels of classification runs; `{served.name}` "
                       "generates text: leave it unset.", "logprobs", "unsupported_parameter")


def _chat_input(body) -> list[str]:
    """The raw input of a chat request: its last user message (the run's template brings the rest)."""
    users = [i for i, m in enumerate(body.messages) if m.role == "user"]
    if not users:
        raise APIError(400, f"`{body.model}` takes the raw input as a user message; the messages have none.",
                       "messages", "invalid_value")
    return [body.messages[users[-1]].text(users[-1])]


def _completion_inputs(body) -> list[str]:
    """The raw inputs of a completion request: its prompt strings."""
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not all(isinstance(p, str) for p in prompts):
        raise APIError(400, f"`{body.model}` takes raw input text, not token ids; send the prompt as text.",
                       "prompt", "invalid_value")
    return prompts


def _limit(body, served) -> int | None:
    """A generation limit the client gave (None: ``eval.max_new_tokens``), refused if it leaves no room."""
    limit = body.explicit_limit() or served.task.max_new_tokens
    if limit >= served.context_length:
        raise APIError(400, f"This model's maximum context length is {served.context_length} tokens; a reply of "
                       f"{limit} tokens leaves no room for the prompt. Ask for fewer tokens.", "max_tokens",
                       "context_length_exceeded")
    return body.explicit_limit()
