"""OpenAI's DPO records as lmtune's preference pairs.

OpenAI's DPO data is ``{"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", "content"}],
"non_preferred_output": [...]}``; lmtune's preference task reads ``{"prompt", "chosen", "rejected"}``. As with
reinforcement records (:mod:`lmtune.serve.jobs.reinforcement`), an upload in OpenAI's shape is checked line by
line, kept as uploaded, and written as pairs into the job's directory when a job trains on it: the last user
message of ``input`` is the prompt and the last message of each output its completion. Earlier turns and system
messages are left out (a preference record has no system prompt of its own), and the job's events say how many.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtune.atomic import write_jsonl
from lmtune.errors import UserError
from lmtune.serve.jobs.reinforcement import first_record, last_user_message, records

#: ``summary.format`` of an upload in OpenAI's DPO shape (its records become lmtune's ``preference`` format).
DPO = "openai_dpo"
KEYS = ("input", "preferred_output", "non_preferred_output")


def is_dpo(path: Path) -> bool:
    """Whether the file's first record is in OpenAI's DPO shape."""
    record = first_record(path)
    return isinstance(record, dict) and set(KEYS) <= set(record)


def convert(path: Path, target: Path, name: str) -> dict[str, Any]:
    """Write ``path``'s DPO records as ``{"prompt", "chosen", "rejected"}`` pairs to ``target``, line for line.

    Returns:
        ``{"records", "dropped_turns"}``: how many system messages and earlier turns were left out.

    Raises:
        UserError: ``name:line``: a record not in OpenAI's DPO shape.
    """
    out, dropped = [], 0
    for source, record in records(path, name):
        pair, left_out = _pair(record, source)
        out.append(pair)
        dropped += left_out
    write_jsonl(target, out)
    return {"records": len(out), "dropped_turns": dropped}


def _pair(record: Any, source: str) -> tuple[dict[str, Any], int]:
    if not isinstance(record, dict) or not set(KEYS) <= set(record):
        raise UserError('a DPO record is {"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", '
                        '"content": ...}], "non_preferred_output": [...]}', source=source)
    messages = record["input"].get("messages") if isinstance(record["input"], dict) else None
    if not isinstance(messages, list):
        raise UserError('"input" must be {"messages": [..., {"role": "user", "content": ...}]}', source=source)
    prompt, _, turns = last_user_message(messages, source)
    others = {k: v for k, v in record.items() if k not in KEYS and k not in ("prompt", "chosen", "rejected")}
    pair = {**others, "prompt": prompt, "chosen": _reply(record, "preferred_output", source),
            "rejected": _reply(record, "non_preferred_output", source)}
    return pair, turns + sum(m["role"] in ("system", "developer") for m in messages)


def _reply(record: dict[str, Any], key: str, source: str) -> str:
    output = record[key]
    last = output[-1] if isinstance(output, list) and output else None
    if not isinstance(last, dict) or last.get("role") != "assistant" or not isinstance(last.get("content"), str):
        raise UserError(f'{key} must be [{{"role": "assistant", "content": <text>}}]', source=source)
    return last["content"]
