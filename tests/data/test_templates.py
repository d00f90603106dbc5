"""Prompt templates (``lmtune.data.templates``): the library, inline and chat rendering, placeholders checked
before any model loads."""

import pytest

from lmtune.data.formats import load_examples
from lmtune.data.templates import TEMPLATES, render, resolve
from lmtune.errors import UserError

LABELS = ["negative", "neutral", "positive"]


def _examples(records, task="classification", labels=LABELS, fields=None):
    rows = [(f"f.jsonl:{i + 1}", r) for i, r in enumerate(records)]
    return load_examples(rows, fields or {}, task, labels)


def test_template_library_has_the_basics():
    for name in ("sentiment", "classification", "summarization", "question_answering", "instruction"):
        assert name in TEMPLATES


def test_render_by_name():
    ex = _examples([{"text": "great stuff", "label": "positive"}])[0]
    out = render(resolve("sentiment", ex.format), ex, LABELS)
    assert ("great stuff" in out.messages[-1]["content"]
            and "negative, neutral or positive" in out.messages[-1]["content"])
    assert out.completion == "positive"


def test_render_inline():
    ex = _examples([{"text": "great stuff", "label": "positive"}])[0]
    inline = resolve({"prompt": "Text: {text}", "completion": "{label}"}, ex.format)
    assert render(inline, ex, LABELS).messages == [{"role": "user", "content": "Text: great stuff"}]


def test_render_chat_record_without_a_template():
    chat = _examples([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}],
                     task="chat", labels=None)[0]
    rendered = render(resolve(None, chat.format), chat, None)
    assert rendered.messages == [{"role": "user", "content": "hi"}] and rendered.completion == "yo"


def test_unknown_template_names_the_key():
    with pytest.raises(UserError, match="unknown template") as info:
        resolve("poem", "classification")
    assert info.value.source == "task.template"


def test_unknown_placeholder_is_refused():
    from lmtune.data.templates import check

    ex = _examples([{"text": "a", "label": "positive"}])[0]
    with pytest.raises(UserError, match="question"):
        check(resolve({"prompt": "{question}"}, ex.format), ex, LABELS)


@pytest.mark.parametrize("prompt", ["Review: {text", "Review: {}", "{text:>{width}}", "{0}", "{text!r}",
                                    "{text.upper}", "{text[0]}", "closing } alone"])
def test_malformed_template_placeholders_are_user_errors_before_any_record(prompt):
    from lmtune.data.templates import validate

    spec = {"prompt": prompt, "completion": "{label}"}
    with pytest.raises(UserError) as info:
        validate(spec)
    assert info.value.source == "task.template"
    with pytest.raises(UserError):
        resolve(spec, "classification")


def test_named_and_absent_templates_are_valid_without_a_model():
    from lmtune.data.templates import validate

    validate("sentiment")
    validate(None)


def test_placeholder_of_no_field_is_refused_without_a_model():
    from lmtune.data.templates import check

    ex = _examples([{"text": "a", "label": "positive", "meta": {"k": 1}}])[0]
    with pytest.raises(UserError, match="nonexistent"):
        check(resolve({"prompt": "{nonexistent}"}, ex.format), ex, LABELS)


def test_placeholder_of_a_field_that_is_not_text_names_its_record():
    from lmtune.data.templates import check

    ex = _examples([{"text": "a", "label": "positive", "meta": {"k": 1}}])[0]
    with pytest.raises(UserError, match="meta") as info:
        check(resolve({"prompt": "{text} {meta}", "completion": "{label}"}, ex.format), ex, LABELS)
    assert info.value.source == "f.jsonl:1"


def test_doubled_braces_are_literal():
    ex = _examples([{"text": "a", "label": "positive", "meta": {"k": 1}}])[0]
    assert render(resolve({"prompt": "{{literal}} {text}", "completion": "{label}"}, ex.format), ex,
                  LABELS).messages[-1]["content"] == "{literal} a"


def test_instruction_template_takes_prompt_completion_records():
    from lmtune.data.templates import check

    ex = _examples([{"prompt": "Translate: bonjour", "completion": "hello"}], task="generation", labels=None)[0]
    template = resolve("instruction", ex.format)
    check(template, ex, None)
    out = render(template, ex, None)
    assert out.messages[-1]["content"] == "Translate: bonjour" and out.completion == "hello"


def test_completion_template_joins_instruction_and_input():
    alpaca = _examples([{"instruction": "Translate", "input": "bonjour", "output": "hello"}], task="generation",
                       labels=None)[0]
    assert render(resolve("completion", alpaca.format), alpaca, None).messages[-1]["content"] == "Translate\n\nbonjour"
