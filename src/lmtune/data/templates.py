"""The prompt-template library: how a record becomes a prompt (messages) and a target text."""

from __future__ import annotations

import dataclasses
import functools
import string
from dataclasses import dataclass
from typing import Any

from lmtune.data.formats import Example
from lmtune.errors import UserError


@dataclass(frozen=True)
class Template:
    """``{field}`` placeholders name record fields; ``{labels}`` lists the class names."""

    prompt: str
    completion: str
    system: str | None = None


@dataclass
class Rendered:
    """A record ready for tokenization: chat messages up to the reply, and the reply to learn."""

    messages: list[dict[str, str]]
    completion: str


TEMPLATES: dict[str, Template] = {
    "sentiment": Template(
        system="You are a sentiment classifier. Answer with one word.",
        prompt="What is the sentiment of this review? Answer {labels}.\n\nReview: {text}",
        completion="{label}"),
    "classification": Template(
        system="You are a text classifier. Answer with the label only.",
        prompt="Classify the text as {labels}.\n\nText: {text}",
        completion="{label}"),
    "summarization": Template(
        system="You write short, faithful summaries.",
        prompt="Summarize the following text.\n\n{prompt}",
        completion="{completion}"),
    "question_answering": Template(
        system="You answer questions concisely.",
        prompt="{context_block}Question: {prompt}",
        completion="{completion}"),
    "instruction": Template(prompt="{instruction}{input_block}", completion="{output}"),
    "completion": Template(prompt="{prompt}", completion="{completion}"),
    "prompt": Template(prompt="{prompt}", completion=""),  # task.type reward: the model's completions are sampled
}

# The default template for each record format.
DEFAULTS = {"classification": "classification", "completion": "completion", "instruction": "instruction",
            "prompt": "prompt"}


def register(name: str, template: Template) -> None:
    """Add a template to the library."""
    TEMPLATES[name] = template


def resolve(spec: Any, fmt: str) -> Template | None:
    """The template a recipe names (``task.template``), an inline one, or the format's default.

    Returns None for chat and raw-text records, which carry their own structure.

    Raises:
        UserError: an unknown name, or an inline template whose placeholders are malformed.
    """
    if fmt in ("chat", "text", "preference", "unpaired_preference"):
        return None
    if spec is None:
        return TEMPLATES[DEFAULTS[fmt]]
    template = _from_spec(spec)
    # A bare prompt (task.type reward) has no completion to render: its answers are sampled.
    return dataclasses.replace(template, completion="") if fmt == "prompt" else template


def _from_spec(spec: Any) -> Template:
    if isinstance(spec, str):
        if spec not in TEMPLATES:
            raise UserError(f"unknown template {spec!r}; choose from {sorted(TEMPLATES)} or give "
                            "{system, prompt, completion} inline", source="task.template")
        return TEMPLATES[spec]
    data = spec if isinstance(spec, dict) else spec.model_dump()
    completion = data.get("completion")
    template = Template(prompt=data["prompt"], completion="{completion}" if completion is None else completion,
                        system=data.get("system"))
    validate(template)
    return template


def validate(template: Template | str | dict | Any | None) -> None:
    """Check a template's syntax without any record or model: every placeholder is a plain ``{field}``.

    Accepts a Template or a recipe's ``task.template`` value (a library name, an inline mapping, or
    None). Call it right after loading a recipe, before data or a model are read.

    Raises:
        UserError (source ``task.template``): unbalanced braces, an empty ``{}`` or positional
            placeholder, attribute or index access, a conversion (``!r``) or format spec (``:>10``).
    """
    if template is None:
        return
    if not isinstance(template, Template):
        _from_spec(template)  # library templates are known good; an inline one is validated there
        return
    for part in (template.system or "", template.prompt, template.completion):
        _placeholders(part)


@functools.lru_cache(maxsize=256)
def _placeholders(text: str) -> tuple[str, ...]:
    """The field names a template string uses, refusing anything but plain ``{name}`` placeholders."""
    hint = "use plain {field} placeholders, and {{ and }} for literal braces"
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise UserError(f"template text {text!r} is malformed ({exc}); {hint}", source="task.template") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        whole = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if not name.isidentifier() or conversion or spec:
            raise UserError(f"placeholder {whole} in {text!r} is not a plain field name; {hint}",
                            source="task.template")
        names.append(name)
    return tuple(names)


def check(template: Template | None, example: Example, labels: list[str] | None) -> None:
    """Check a template completely against a record, without a model or tokenizer.

    Fails early, naming the placeholder, if the template is malformed, asks for a field the records
    lack, or for one whose value is not text or a number.
    """
    if template is None:
        return
    validate(template)
    values = _values(example, labels)
    for part in (template.system or "", template.prompt, template.completion):
        for name in _placeholders(part):
            if name not in values:
                raise UserError(f"placeholder {{{name}}} names no field of the records (they have "
                                f"{sorted(values)})", source="task.template")
            _check_value(name, values[name], example.source)


def _check_value(name: str, value: Any, source: str) -> None:
    if value is None or isinstance(value, (dict, list, tuple, bytes, bytearray, bool)):
        raise UserError(f"placeholder {{{name}}} would insert {type(value).__name__} {str(value)[:40]!r}, "
                        "not text; fix the record or use another field", source=source)


def render(template: Template | None, example: Example, labels: list[str] | None) -> Rendered:
    """Turn one example into messages and a completion."""
    if example.format == "chat":
        messages = [dict(role=m["role"], content=m["content"]) for m in example.record["messages"]]
        return Rendered(messages[:-1], messages[-1]["content"])
    if example.format == "text":
        return Rendered([], example.record["text"])
    values = _values(example, labels)
    messages = []
    if template.system:
        messages.append({"role": "system", "content": _fill(template.system, values, example.source)})
    messages.append({"role": "user", "content": _fill(template.prompt, values, example.source)})
    return Rendered(messages, _fill(template.completion, values, example.source))


def _fill(text: str, values: dict[str, Any], source: str) -> str:
    """``text`` with its placeholders filled; a missing or non-text value names the record."""
    for name in _placeholders(text):
        if name not in values:
            raise UserError(f"record has no field {name!r} for the template's {{{name}}}", source=source)
        _check_value(name, values[name], source)
    return text.format_map(values)


def _values(example: Example, labels: list[str] | None) -> dict[str, Any]:
    values = {**example.extra, **example.record}
    if labels:
        values["labels"] = ", ".join(labels[:-1]) + f" or {labels[-1]}" if len(labels) > 1 else labels[0]
    values["input_block"] = _block(values.get("input"), "\n\n{}")
    values["context_block"] = _block(values.get("context"), "Context: {}\n\n")
    # The two generation formats say the same thing with different names, so either format's
    # templates work on the other: {prompt, completion} <-> {instruction, output}.
    if example.format == "completion":
        values.setdefault("instruction", values["prompt"])
        values.setdefault("output", values["completion"])
    elif example.format == "instruction":
        values.setdefault("prompt", values["instruction"] + values["input_block"])
        values.setdefault("completion", values["output"])
    return values


def _block(value: Any, form: str) -> Any:
    """An optional field as a block of the prompt (``form`` around it), or "" when empty.

    A value that is not text or a number is passed on as it is, so that a template using the block
    refuses it (:func:`_check_value`) naming the record, rather than inserting its repr.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if value is None or isinstance(value, str):
        return form.format(value.strip()) if value and value.strip() else ""
    return value
