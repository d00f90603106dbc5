"""OpenAI's reinforcement fine-tuning (``method.type: reinforcement``) as an lmtune GRPO recipe.

OpenAI's RFT data is ``{"messages": [...], <fields>}``: the conversation so far, ending in a user turn, with any
other fields of the line reaching the grader as ``{{item.<field>}}``. lmtune's reward task reads ``{"prompt",
<fields>}``, so an upload in OpenAI's shape is checked here line by line (errors name ``file:line``), kept as
uploaded (its content comes back unchanged), and written as prompt records into the job's directory when a job
trains on it. The last user message is the prompt; a system (or developer) message common to every record
becomes the recipe's system prompt; earlier user and assistant turns are dropped, and the job's events say how
many.

The job's hyperparameters map onto ``training.grpo`` (:func:`training`): ``compute_multiplier`` scales how
many completions are sampled per prompt (``num_generations`` = 4 x multiplier, at least 2), the multiplier
being OpenAI's knob for "compute used for exploring the search space"; ``eval_interval`` is the steps between
validations; ``eval_samples`` and ``reasoning_effort`` have no counterpart (validation scores one greedy answer
per held-out prompt; the base model is not a reasoning model), are accepted, and a job event says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmtune.atomic import write_jsonl
from lmtune.errors import UserError
from lmtune.recipe_graders import parse_grader
from lmtune.serve.errors import APIError

#: ``summary.format`` of an upload in OpenAI's RFT shape (its records become lmtune's ``prompt`` format).
RFT = "openai_rft"
#: ``num_generations`` at ``compute_multiplier`` 1 (training.grpo's default).
GENERATIONS = 4
REASONING_EFFORTS = ("default", "low", "medium", "high")
_ROLES = ("system", "developer", "user", "assistant")


def first_record(path: Path) -> Any:
    """The file's first JSON record, or None when it is not JSON (the data stage's own check names the line)."""
    with open(path, encoding="utf-8", errors="replace") as lines:
        first = next((line for line in lines if line.strip()), "")
    try:
        return json.loads(first)
    except (ValueError, RecursionError):
        return None


def is_rft(path: Path) -> bool:
    """Whether the file's first record is in OpenAI's RFT shape: messages that do not end in an assistant reply."""
    record = first_record(path)
    messages = record.get("messages") if isinstance(record, dict) else None
    return (isinstance(messages, list) and bool(messages) and isinstance(messages[-1], dict)
            and messages[-1].get("role") != "assistant")


def convert(path: Path, target: Path, name: str) -> dict[str, Any]:
    """Write ``path``'s RFT records as prompt records to ``target``, line for line; return what was changed.

    Returns:
        ``{"records", "system", "dropped_turns"}``: the system prompt every record shares (or None) and how
        many earlier turns were left out.

    Raises:
        UserError: ``name:line``: a record not in the RFT shape, or system messages that differ between records.
    """
    out, systems, dropped = [], {}, 0
    for source, record in records(path, name):
        prompt, system, earlier = _prompt(record, source)
        systems.setdefault(system, source)
        if len(systems) > 1:
            raise UserError(f"its system message differs from that of {systems[next(iter(systems))]}; lmtune "
                            "gives a job one system prompt, so give every record the same one (or none)",
                            source=source)
        dropped += earlier
        out.append({**{k: v for k, v in record.items() if k != "messages"}, "prompt": prompt})
    write_jsonl(target, out)
    return {"records": len(out), "system": next(iter(systems), None), "dropped_turns": dropped}


def records(path: Path, name: str) -> Iterator[tuple[str, Any]]:
    """``(name:line, record)`` for each non-blank line of a JSONL file.

    Raises:
        UserError: ``name:line``: a line that is not UTF-8 or not JSON (nested too deeply counts).
    """
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, 1):
            source = f"{name}:{number}"
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    yield source, json.loads(line)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                raise UserError(f"not valid UTF-8 JSON ({type(exc).__name__}: {exc})", source=source) from None


def _prompt(record: Any, source: str) -> tuple[str, str | None, int]:
    """The record's prompt (its last user message), its system text, and how many earlier turns it drops."""
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        raise UserError('a reinforcement record is {"messages": [..., {"role": "user", "content": ...}], '
                        "<fields for the grader>}", source=source)
    if "prompt" in record:
        raise UserError("the field 'prompt' is where lmtune puts the last user message; rename it", source=source)
    return last_user_message(messages, source)


def last_user_message(messages: list, source: str) -> tuple[str, str | None, int]:
    """A conversation that ends in a user turn as ``(that turn's text, the system text, earlier turns dropped)``.

    Raises:
        UserError: a message that is not ``{role, content: text}``, or a conversation that ends otherwise.
    """
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in _ROLES or not isinstance(msg.get("content"), str):
            raise UserError(f"messages[{i}] must be {{\"role\": {'|'.join(_ROLES)}, \"content\": <text>}}",
                            source=source)
    if not messages or messages[-1]["role"] != "user":
        last = messages[-1]["role"] if messages else "nobody"
        raise UserError(f"the last message is {last}'s; the conversation must end with the user's message that "
                        "the model answers", source=source)
    if not messages[-1]["content"].strip():
        raise UserError("the last user message is empty", source=source)
    system = "\n\n".join(m["content"] for m in messages if m["role"] in ("system", "developer")) or None
    turns = sum(m["role"] in ("user", "assistant") for m in messages) - 1
    return messages[-1]["content"], system, turns


def grader_of(method: dict[str, Any], allow_python: bool = False) -> Any:
    """``method.reinforcement.grader`` validated (a problem is a 400 naming its path under it).

    ``allow_python``: accept python graders' ``source`` (``lmtune serve --allow-python-graders``); that code runs on
    the server's machine in a time-limited subprocess, not in a sandbox, so a server refuses it unless told.
    """
    section = method.get("reinforcement") or {}
    if "grader" not in section:
        raise APIError(400, "method.reinforcement.grader is required: the grader that scores each sampled answer, "
                       "e.g. {\"type\": \"string_check\", \"name\": \"exact\", \"input\": \"{{sample.output_text}}\", "
                       "\"reference\": \"{{item.answer}}\", \"operation\": \"eq\"}.", "method.reinforcement.grader",
                       "invalid_value")
    try:
        grader = parse_grader(section["grader"])
    except ValueError as exc:
        path, sep, what = str(exc).partition(": ")
        param = "method.reinforcement.grader" + (f".{path}" if sep and " " not in path else "")
        raise APIError(400, f"{param}: {what if sep else exc}", param, "invalid_value") from None
    _no_server_paths(grader, "method.reinforcement.grader", allow_python)
    return grader


def _no_server_paths(grader: Any, param: str, allow_python: bool) -> None:
    """Refuse lmtune's recipe-only grader extensions, which name a file or module on the server's machine (a
    client of the API gives its grader inline, as OpenAI's schema does), and python graders unless allowed."""
    if grader.type == "callable" or (grader.type == "python" and grader.file is not None):
        key = "type" if grader.type == "callable" else "file"
        raise APIError(400, f"{param}.{key}: a fine-tuning job's grader cannot name a file or module on the server "
                       "(lmtune's recipe extension); give a python grader its code as source", f"{param}.{key}",
                       "invalid_value")
    if grader.type == "python" and not allow_python:
        raise APIError(400, f"{param}.source: this server runs no python graders, whose code would run on its "
                       "machine unsandboxed; use string_check, text_similarity, score_model or multi, or start "
                       "lmtune serve with --allow-python-graders if every client is trusted", f"{param}.source",
                       "invalid_value")
    for key, sub in (grader.graders.items() if grader.type == "multi" else ()):
        _no_server_paths(sub, f"{param}.graders.{key}", allow_python)


def check_grader(grader: Any, records_path: Path, name: str) -> None:
    """Every ``{{item.<field>}}`` of the grader in every record, its file, module or judge here (a 400 if not)."""
    from lmtune import graders

    items = [json.loads(line) for line in records_path.read_text().splitlines() if line.strip()]
    try:
        graders.check(grader, items, "method.reinforcement.grader", [f"{name}:{i}" for i in range(1, len(items) + 1)])
    except UserError as exc:
        raise APIError(400, f"{exc.source}: {exc.message}", exc.source, "invalid_value") from None


def training(hyper: dict[str, Any], grader: dict[str, Any]) -> dict[str, Any]:
    """The ``training`` keys of a reinforcement job beyond epochs, batch size and learning rate (``grader``: the
    request's object as given, which the recipe validates again)."""
    grpo = {"grader": grader,
            "num_generations": max(2, round(GENERATIONS * hyper.get("compute_multiplier", 1.0)))}
    out: dict[str, Any] = {"grpo": grpo}
    if hyper.get("eval_interval") is not None:
        out["eval_every"] = hyper["eval_interval"]
    return out


def notes(hyper: dict[str, Any], converted: dict[str, Any] | None) -> list[str]:
    """Job events that say what of the request has no lmtune counterpart, and what the data conversion did."""
    out = []
    if hyper.get("reasoning_effort") not in (None, "default"):
        out.append(f"reasoning_effort {hyper['reasoning_effort']!r} is accepted and ignored: the base model is not "
                   "a reasoning model, and its completions are sampled as they come")
    if hyper.get("eval_samples") is not None:
        out.append(f"eval_samples {hyper['eval_samples']} is accepted and ignored: validation scores one greedy "
                   "answer per held-out prompt")
    if converted and converted["dropped_turns"]:
        out.append(f"{converted['dropped_turns']} messages before the last user message of their records were "
                   "left out: lmtune trains on the last user message as the prompt")
    return out
