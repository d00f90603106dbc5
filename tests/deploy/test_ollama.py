"""The Ollama Modelfile: the Go TEMPLATE renders exactly what the Jinja chat template renders, values survive
Ollama's Modelfile parser, untranslatable templates are refused with a clear error."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
from tiny import CHAT_TEMPLATE as TINY
from tiny import build_tokenizer

from lmtune.deploy.ollama import import_command, modelfile
from lmtune.errors import UserError

# HuggingFaceTB/SmolLM2-135M-Instruct, exactly as it ships (tokenizer_config.json / the GGUF's chat template)
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# meta-llama/Meta-Llama-3-8B-Instruct
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
# meta-llama/Llama-2-7b-chat-hf: the system prompt goes inside the first [INST]
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
# mistralai/Mistral-7B-Instruct-v0.1: raises on a system message
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
# google/gemma-7b-it: raises on a system message, the assistant is "model"
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)
# literal text an Ollama TEMPLATE cannot hold as is: braces, quotes ("""), a control character
AWKWARD = (
    "{% for m in messages %}{\"{{ m['role'] }}\"\"\": {{ m['content'] }}}\x01\n{% endfor %}"
    "{% if add_generation_prompt %}{{ '{{\"\"\"assistant\"\"\"' }}{% endif %}"
)

SYSTEM, CHAT = ("system", "You are terse."), [("user", "Hi there"), ("assistant", "Hello! How can I help?"),
                                             ("user", 'Say "{{ .Content }}" twice.')]
TEMPLATES = {  # name: (template, system placement)
    "smollm2": (SMOLLM2, "block"), "llama3": (LLAMA3, "block"), "llama2": (LLAMA2, "fold"),
    "mistral": (MISTRAL, "none"), "gemma": (GEMMA, "none"), "tiny": (TINY, "block"), "awkward": (AWKWARD, "block"),
}


# ---- a minimal Go text/template evaluator for the subset modelfile() emits --------------------------------------

_ACTION = re.compile(r"\{\{(- )?(.*?)( -)?\}\}", re.S)


def _go_parse(tokens: list, i: int = 0) -> tuple[list, int]:
    """Nodes up to an ``end``/``else``: ("text", s), ("do", action) or ("block", [(head, nodes), ...])."""
    out = []
    while i < len(tokens):
        kind, s = tokens[i]
        if kind == "do" and (s in ("end", "else") or s.startswith("else if ")):
            return out, i
        if kind == "do" and s.startswith(("if ", "range ")):
            branches, head = [], s
            while True:
                body, i = _go_parse(tokens, i + 1)
                branches.append((head, body))
                head = "if " + tokens[i][1][len("else if "):] if tokens[i][1].startswith("else if ") else "if true"
                if tokens[i][1] == "end":
                    break
            out.append(("block", branches))
        else:
            out.append(tokens[i])
        i += 1
    return out, i


def _go_value(expr: str, dot, scope: dict):
    if expr == "true" or expr.startswith('"'):
        return True if expr == "true" else ast.literal_eval(expr)
    if expr.startswith("eq "):
        left, right = re.fullmatch(r"eq (\S+) (\".*\")", expr).groups()
        return _go_value(left, dot, scope) == _go_value(right, dot, scope)
    if expr.startswith("$."):
        return scope["$"][expr[2:]]
    return scope[expr] if expr.startswith("$") else dot[expr[1:]]


def _go_run(nodes: list, dot, scope: dict, out: list) -> None:
    for kind, arg in nodes:
        if kind == "text":
            out.append(arg)
        elif kind == "block" and arg[0][0].startswith("range "):
            for item in _go_value(arg[0][0][len("range "):], dot, scope):
                _go_run(arg[0][1], item, scope, out)
        elif kind == "block":
            body = next((body for head, body in arg if _go_value(head[len("if "):], dot, scope)), [])
            _go_run(body, dot, scope, out)
        elif m := re.fullmatch(r"(\$\w+) :?= (.+)", arg):
            scope[m[1]] = _go_value(m[2], dot, scope)
        else:
            out.append(str(_go_value(arg, dot, scope)))


def go_render(template: str, conversation: list[tuple[str, str]]) -> str:
    """``template`` executed as Ollama executes it: ``.System`` joins the system messages, which stay in
    ``.Messages`` too; ``{{-``/``-}}`` trim the whitespace next to them."""
    parts = _ACTION.split(template)
    texts, left, actions, right = parts[0::4], parts[1::4], parts[2::4], parts[3::4]
    for i in range(len(actions)):
        texts[i] = texts[i].rstrip(" \t\r\n") if left[i] else texts[i]
        texts[i + 1] = texts[i + 1].lstrip(" \t\r\n") if right[i] else texts[i + 1]
    tokens = [("text", texts[0])]
    for action, text in zip(actions, texts[1:], strict=True):
        tokens += [("do", action.strip()), ("text", text)]
    nodes, _ = _go_parse(tokens)
    root = {"System": "\n\n".join(c for r, c in conversation if r == "system"), "Prompt": "",
            "Messages": [{"Role": r, "Content": c} for r, c in conversation]}
    out: list[str] = []
    _go_run(nodes, root, {"$": root}, out)
    return "".join(out)


# ---- Ollama's Modelfile parser (parser/parser.go ParseFile), ported for the commands written here -----------------

def _unquote(s: str) -> tuple[str, bool]:
    if s.startswith('"""'):
        return (s[3:-3], True) if len(s) >= 6 and s.endswith('"""') else ("", False)
    if s.startswith('"'):
        return (s[1:-1], True) if len(s) >= 2 and s.endswith('"') else ("", False)
    return s, True


def _step(state: str, r: str) -> tuple[str, str]:
    """parseRuneForState: the next state and the rune to keep ("" for Go's 0)."""
    space, newline = r in " \t", r in "\r\n"
    if state == "nil":
        return ("comment", "") if r == "#" else ("nil", "") if space or newline else ("name", r)
    if state == "comment":
        return ("nil" if newline else "comment"), ""
    if state in ("name", "parameter"):
        return ("value", "") if space else (state, r)
    return ("nil", r) if space or newline else ("value", r)


def ollama_parse(text: str) -> list[tuple[str, str]]:
    """The (command, argument) pairs Ollama reads from a Modelfile."""
    commands, state, buf, name = [], "nil", "", ""
    for ch in text:
        nxt, r = _step(state, ch)
        if nxt != state:
            if state == "name":
                name = buf.lower()
                nxt = "parameter" if name == "parameter" else nxt
            elif state == "parameter":
                name = buf
            elif state == "value":
                value, ok = _unquote(buf.strip())
                if not ok or r in (" ", "\t"):
                    buf += r
                    continue
                commands.append((name, value))
            buf, state = "", nxt
        if r.isprintable():
            buf += r
    if state == "value":
        value, ok = _unquote(buf.strip())
        assert ok, "unterminated value"
        commands.append((name, value))
    return commands


def template_of(text: str) -> str:
    """The TEMPLATE as written between its triple quotes."""
    return text.split('TEMPLATE """', 1)[1].split('"""\n', 1)[0]


def _arguments(text: str, command: str) -> list[str]:
    return [value for name, value in ollama_parse(text) if name == command]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(chat=True)


def _jinja(tokenizer, template: str, conversation: list[tuple[str, str]]) -> str:
    tokenizer.chat_template = template
    messages = [{"role": r, "content": c} for r, c in conversation]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_the_go_template_renders_what_the_chat_template_renders(name, tokenizer):
    template, placement = TEMPLATES[name]
    text = modelfile("model.gguf", template, ["<eos>"], system=SYSTEM[1], bos_token="<bos>", eos_token="<eos>")
    go = _arguments(text, "template")[0]
    conversations = [CHAT, CHAT[:1]] + ([[SYSTEM, *CHAT], [SYSTEM, CHAT[0]]] if placement != "none" else [])
    for conversation in conversations:
        assert go_render(go, conversation) == _jinja(tokenizer, template, conversation), conversation
    assert _arguments(text, "system") == ([SYSTEM[1]] if placement != "none" else [])
    assert ("{{ $system := .System }}" in go) == (placement == "fold")
    assert ("{{ if .System }}" in go) == (placement == "block")
    if placement == "none":
        assert "# SYSTEM omitted: the chat template rejects a system message" in text


def test_the_layout_of_a_chatml_modelfile():
    text = modelfile("model.gguf", SMOLLM2, ["<|im_end|>"])
    assert text.startswith("FROM ./model.gguf\nTEMPLATE \"\"\"{{ if .System }}<|im_start|>system\n{{ .System }}")
    assert "{{- range .Messages }}\n{{- if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n" in text
    assert text.endswith("{{- end }}<|im_start|>assistant\n\"\"\"\nPARAMETER stop \"<|im_end|>\"\n")
    assert ollama_parse(text)[0] == ("from", "./model.gguf")


def test_stop_strings_and_system_survive_the_modelfile_parser():
    stops = ["<|im_end|>", 'say "hi"', "C:\\path\\", '""x', "two\nlines", " padded ", "<|im_end|>", ""]
    system = 'Be brief.\nUse "quotes" and \\backslashes\\.\n  Indented """ line ok\n'
    text = modelfile("model.gguf", SMOLLM2, stops, system=system)
    assert _arguments(text, "stop") == ["<|im_end|>", 'say "hi"', "C:\\path\\", '""x', "two\nlines", " padded "]
    assert 'PARAMETER stop "C:\\path\\"\n' in text and 'PARAMETER stop "say "hi""\n' in text  # no escapes
    assert f'SYSTEM """{system}"""' in text
    assert _arguments(text, "system") == [system]
    assert _arguments(text, "template")[0] == template_of(text)


@pytest.mark.parametrize("system", ['ends in """\nthen more', "a bell \x07"])
def test_a_system_prompt_the_modelfile_cannot_carry_is_refused(system):
    with pytest.raises(UserError, match="Ollama Modelfile cannot carry"):
        modelfile("model.gguf", SMOLLM2, [], system=system)


def test_no_chat_template_sends_the_prompt_verbatim():
    text = modelfile("model.gguf", None, ["<eos>"], system="Be brief.")
    assert ollama_parse(text) == [("from", "./model.gguf"), ("template", "{{ .Prompt }}"), ("stop", "<eos>")]
    assert "# SYSTEM omitted: no chat template" in text
    assert go_render("{{ .Prompt }}", []) == ""


def test_a_gguf_path_with_a_space_is_quoted():
    assert ollama_parse(modelfile("my model.gguf", None, []))[0] == ("from", "./my model.gguf")
    assert ollama_parse(modelfile("/abs/m.gguf", None, []))[0] == ("from", "/abs/m.gguf")


def test_a_system_prompt_the_template_places_elsewhere():
    # Mistral v0.3 style: the system prompt goes into the *last* user turn, which the translation cannot follow
    last_user = (
        "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
        "{% set messages = messages[1:] %}{% endif %}{{ bos_token }}{% for m in messages %}"
        "{% if m['role'] == 'user' %}[INST] {% if loop.last and system is defined %}{{ system }}\n\n{% endif %}"
        "{{ m['content'] }}[/INST]{% else %} {{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    )
    text = modelfile("model.gguf", last_user, ["</s>"], eos_token="</s>")
    assert "# the chat template places the system prompt where an Ollama template cannot follow" in text
    assert go_render(template_of(text), CHAT) == "[INST] Hi there[/INST] Hello! How can I help?</s>" \
        '[INST] Say "{{ .Content }}" twice.[/INST]'
    with pytest.raises(UserError, match="a system prompt was given") as err:
        modelfile("model.gguf", last_user, [], system="Be brief.")
    assert err.value.source == "tokenizer chat_template"


@pytest.mark.parametrize("template", [
    # raises without a system message: no user/assistant conversation renders at all
    "{% if messages[0]['role'] != 'system' %}{{ raise_exception('a system message is required') }}{% endif %}"
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}",
    # per-message logic: turns are numbered, so a conversation is not the concatenation of fixed pieces
    "{% for m in messages %}<turn {{ loop.index }}>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}",
    # the content is transformed
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] | upper }}\n{% endfor %}",
    # does not compile
    "{% for m in messages %}{{ m['content'] }",
])
def test_an_untranslatable_template_is_refused(template):
    with pytest.raises(UserError) as err:
        modelfile("model.gguf", template, [])
    assert err.value.source == "tokenizer chat_template"
    assert "cannot be translated for Ollama" in err.value.message
    assert "model.gguf itself carries the Jinja chat template" in err.value.message


def test_import_command_quotes_for_a_shell():
    command = import_command(Path("/tmp/out dir"), "my-model")
    assert command == "ollama create my-model -f '/tmp/out dir/Modelfile'"
    assert shlex.split(command) == ["ollama", "create", "my-model", "-f", "/tmp/out dir/Modelfile"]
