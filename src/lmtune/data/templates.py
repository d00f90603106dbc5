"""The prompt-template library: how a record becomes a prompt (messages) and a target text."""

from __future__ import annotations

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
}

# The default template for each record format.
DEFAULTS = {"classification": "classification", "completion": "completion", "instruction": "instruction"}


def register(name: str, template: Template) -> None:
    """Add a template to the library."""
    TEMPLATES[name] = template


def resolve(spec: Any, fmt: str) -> Template | None:
    """The template a recipe names (``task.template``), an inline one, or the format's default.

    Returns None for chat and raw-text records, which carry their own structure.
    """
    if fmt in ("chat", "text", "preference"):
        return None
    if spec is None:
        return TEMPLATES[DEFAULTS[fmt]]
    if isinstance(spec, str):
        if spec not in TEMPLATES:
            raise UserError(f"unknown template {spec!r}; choose from {sorted(TEMPLATES)} or give "
                            "{system, prompt, completion} inline", source="task.template")
        return TEMPLATES[spec]
    data = spec if isinstance(spec, dict) else spec.model_dump()
    return Template(prompt=data["prompt"], completion=data.get("completion", "{completion}"),
                    system=data.get("system"))


def check(template: Template | None, example: Example, labels: list[str] | None) -> None:
    """Fail early, naming the placeholder, if a template asks for a field records lack."""
    if template is None:
        return
    values = _values(example, labels)
    for part in (template.system or "", template.prompt, template.completion):
        for _, name, _, _ in string.Formatter().parse(part):
            if name and name not in values:
                raise UserError(f"placeholder {{{name}}} names no field of the records (they have "
                                f"{sorted(values)})", source="task.template")


def render(template: Template | None, example: Example, labels: list[str] | None) -> Rendered:
    """Turn one example into messages and a completion."""
    if example.format == "chat":
        messages = [dict(role=m["role"], content=str(m["content"])) for m in example.record["messages"]]
        return Rendered(messages[:-1], messages[-1]["content"])
    if example.format == "text":
        return Rendered([], str(example.record["text"]))
    values = _values(example, labels)
    messages = []
    if template.system:
        messages.append({"role": "system", "content": template.system.format_map(values)})
    messages.append({"role": "user", "content": template.prompt.format_map(values)})
    return Rendered(messages, template.completion.format_map(values))


def _values(example: Example, labels: list[str] | None) -> dict[str, Any]:
    values = {**example.extra, **example.record}
    if labels:
        values["labels"] = ", ".join(labels[:-1]) + f" or {labels[-1]}" if len(labels) > 1 else labels[0]
    text_input = str(values.get("input") or "").strip()
    values["input_block"] = f"\n\n{text_input}" if text_input else ""
    context = str(values.get("context") or "").strip()
    values["context_block"] = f"Context: {context}\n\n" if context else ""
    return values
