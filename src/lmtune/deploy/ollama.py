"""The Ollama Modelfile for an exported GGUF: FROM, a Go TEMPLATE translated from the Jinja chat template, stops.

Ollama formats a chat with a Go text/template over ``.Messages``; the tokenizer's chat template is Jinja, and no
general translation exists. So the Jinja template is rendered (as transformers renders it) on conversations whose
contents are sentinels, and the renderings are cut into fixed pieces: a preamble, each role's prefix and suffix
around its content, the generation prompt, and where the system prompt goes (a block of its own, or folded into
the first user turn as Llama 2 does). The pieces are then checked by composing longer conversations and comparing
them with the Jinja rendering; a template they do not reproduce is refused. The GGUF carries the Jinja template
itself, so llama.cpp runs it either way.

Ollama's Modelfile parser has no escapes: a value is taken between ``"`` or ``\"\"\"`` as written. Values are
quoted to survive that parser exactly, and the template's literal text avoids what it cannot carry (``{``, ``"``
and control characters are written as Go string literals, ``{{ "..." }}``).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import groupby
from pathlib import Path

import jinja2
from jinja2 import ext, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lmtune.errors import UserError

_SOURCE = "tokenizer chat_template"
_SYS, _U1, _A1, _U2, _A2, _U3 = (f"{name}-7c1e" for name in ("SYSTEM", "USER1", "ASSISTANT1", "USER2",
                                                             "ASSISTANT2", "USER3"))
_CHAT = [("user", _U1), ("assistant", _A1), ("user", _U2)]
_LONG = [*_CHAT, ("assistant", _A2), ("user", _U3)]
# (conversation, add_generation_prompt) pairs the pieces must reproduce exactly
_CORE_CHECKS = [([("user", _U1)], True), (_CHAT[:2], False), (_LONG, True), (_LONG[:4], False)]
_SYSTEM_CHECKS = [([("system", _SYS), ("user", _U1)], True), ([("system", _SYS), *_LONG], True)]


def modelfile(gguf_file: str, chat_template: str | None, stop: list[str], system: str | None = None,
              bos_token: str = "", eos_token: str = "") -> str:
    """The Modelfile text: FROM ./<gguf_file>, TEMPLATE (Go template translated from the chat template),
    PARAMETER stop "<s>" for each stop string, SYSTEM when given.

    ``bos_token``/``eos_token`` are what the chat template's ``bos_token``/``eos_token`` render as; leave
    ``bos_token`` empty when llama.cpp adds the BOS token itself (the GGUF's ``add_bos_token``).
    A template without a system turn gets no SYSTEM line (a comment says why). Raises ``UserError`` when the
    chat template cannot be translated, or when ``system`` is given but the translation cannot place it.
    """
    note = ""
    if chat_template is None:
        template, takes_system = "{{ .Prompt }}", False
        note = "no chat template: prompts go to the model verbatim"
    else:
        try:
            pieces = _translate(chat_template, bos_token, eos_token)
        except _Untranslatable as err:
            raise UserError(f"the chat template cannot be translated for Ollama: {err}. {gguf_file} itself "
                            "carries the Jinja chat template and still works in llama.cpp (llama-server --jinja); "
                            "for Ollama, write the Modelfile's TEMPLATE by hand", source=_SOURCE) from err
        template, takes_system, note = _go_template(pieces), pieces.system != "none", pieces.note
        if system and not takes_system and pieces.renders_system:
            raise UserError(f"a system prompt was given, but {note}; drop the system prompt or write the "
                            "Modelfile's TEMPLATE by hand", source=_SOURCE)
    path = gguf_file if Path(gguf_file).is_absolute() or gguf_file.startswith(("./", "../")) else f"./{gguf_file}"
    bare = path == path.strip() and path.isprintable() and not path.startswith('"')
    lines = [f"FROM {path if bare else _quote(path, 'GGUF file name')}", f'TEMPLATE """{template}"""']
    lines += [f"PARAMETER stop {_quote(s, 'stop string')}" for s in dict.fromkeys(stop) if s]
    if system and takes_system:
        lines.append(f"SYSTEM {_quote(system, 'system prompt')}")
    elif note:
        lines.append(f"# SYSTEM omitted: {note}" if system else f"# {note}")
    return "\n".join(lines) + "\n"


def import_command(out_dir: Path, name: str) -> str:
    """The one command that imports it: `ollama create <name> -f <out_dir>/Modelfile` (quoted for a shell)."""
    return f"ollama create {shlex.quote(name)} -f {shlex.quote(str(Path(out_dir) / 'Modelfile'))}"


class _Untranslatable(Exception):
    """Why the chat template cannot become an Ollama template."""


class _RenderError(Exception):
    """The Jinja chat template raised while rendering."""


@dataclass(frozen=True)
class _Pieces:
    """A chat template cut into fixed text: ``preamble``, then per message ``prefix + content + suffix`` for its
    role, then ``generation``. ``system`` is ``"block"`` (``system_text[0] + system + system_text[1]`` replaces the
    preamble), ``"fold"`` (that text goes right after the first user prefix) or ``"none"``, with ``note`` saying
    why and ``renders_system`` whether the Jinja template does render system messages (somewhere else)."""

    preamble: str
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation: str
    system: str = "none"
    system_text: tuple[str, str] = ("", "")
    note: str = ""
    renders_system: bool = False


class _Generation(ext.Extension):
    """transformers' ``{% generation %}`` marker (assistant-token masks): renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _compile(chat_template: str) -> jinja2.Template:
    """The template in the environment transformers renders chat templates in."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_Generation, ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(chat_template)
    except jinja2.TemplateError as err:
        raise _Untranslatable(f"it does not compile ({err})") from err


@dataclass
class _Renderer:
    template: jinja2.Template
    bos_token: str
    eos_token: str

    def __call__(self, conversation: list[tuple[str, str]], generation: bool) -> str:
        messages = [{"role": role, "content": content} for role, content in conversation]
        try:
            return self.template.render(messages=messages, add_generation_prompt=generation, tools=None,
                                        documents=None, bos_token=self.bos_token, eos_token=self.eos_token)
        except Exception as err:  # a chat template may raise anything (raise_exception, a bad index, ...)
            raise _RenderError(str(err) or type(err).__name__) from err


def _translate(chat_template: str, bos_token: str, eos_token: str) -> _Pieces:
    render = _Renderer(_compile(chat_template), bos_token, eos_token)
    try:
        pieces = _derive_turns(render)
        _check(pieces, render, _CORE_CHECKS)
    except _RenderError as err:
        raise _Untranslatable(f"rendering a user/assistant conversation fails ({err})") from err
    return _with_system(pieces, render)


def _after(longer: str, shorter: str, what: str) -> str:
    if not longer.startswith(shorter):
        raise _Untranslatable(f"{what} changes the text rendered before it")
    return longer[len(shorter):]


def _split(text: str, sentinel: str, what: str) -> tuple[str, str]:
    if text.count(sentinel) != 1:
        raise _Untranslatable(f"{what} does not appear verbatim exactly once in the rendering")
    before, after = text.split(sentinel)
    return before, after


def _derive_turns(render: _Renderer) -> _Pieces:
    """Preamble, role prefixes and suffixes and the generation prompt from user/assistant conversations."""
    one = render(_CHAT[:1], False)
    two = render(_CHAT[:2], False)
    three = render(_CHAT, False)
    head, user_suffix = _split(one, _U1, "a user message's content")
    assistant = _split(_after(two, one, "an assistant message"), _A1, "an assistant message's content")
    user_prefix, last_suffix = _split(_after(three, two, "a second user message"), _U2, "a user message's content")
    if last_suffix != user_suffix or not head.endswith(user_prefix):
        raise _Untranslatable("a user turn renders differently depending on where it is in the conversation")
    generation = _after(render(_CHAT, True), three, "the generation prompt")
    return _Pieces(head[:len(head) - len(user_prefix)], (user_prefix, user_suffix), assistant, generation)


def _with_system(pieces: _Pieces, render: _Renderer) -> _Pieces:
    """``pieces`` with the system prompt placed: as a block before the turns, folded into the first user turn,
    or not at all when the template rejects or drops system messages or puts them anywhere else."""
    try:
        with_system = render([("system", _SYS), *_CHAT], True)
    except _RenderError:
        return replace(pieces, note="the chat template rejects a system message")
    if with_system.count(_SYS) != 1:
        return replace(pieces, note="the chat template does not render a system message")
    for placement, text in _system_slots(pieces, with_system, render(_CHAT, True)):
        if text.count(_SYS) == 1:
            before, after = text.split(_SYS)
            candidate = replace(pieces, system=placement, system_text=(before, after))
            try:
                _check(candidate, render, _SYSTEM_CHECKS)
                return candidate
            except (_Untranslatable, _RenderError):
                continue
    return replace(pieces, renders_system=True,
                   note="the chat template places the system prompt where an Ollama template cannot follow")


def _system_slots(pieces: _Pieces, with_system: str, plain: str):
    """Candidate (placement, text around the system prompt) pairs: the text that replaces the preamble
    (``"block"``), or the text between the first user prefix and that user's content (``"fold"``)."""
    body = plain[len(pieces.preamble):]
    if with_system.endswith(body):
        yield "block", with_system[:len(with_system) - len(body)]
    head = pieces.preamble + pieces.user[0]
    rest = plain[len(head):]
    if with_system.startswith(head) and with_system.endswith(rest) and len(head) + len(rest) <= len(with_system):
        yield "fold", with_system[len(head):len(with_system) - len(rest)]


def _compose(p: _Pieces, conversation: list[tuple[str, str]], generation: bool) -> str:
    """What the Go template from ``_go_template(p)`` renders for ``conversation`` (Ollama passes the system
    messages joined as ``.System`` and keeps them in ``.Messages``)."""
    system = "\n\n".join(content for role, content in conversation if role == "system")
    before, after = p.system_text
    out = [before, system, after] if p.system == "block" and system else [p.preamble]
    pending = system if p.system == "fold" else ""
    for role, content in conversation:
        if role == "user":
            out += [p.user[0], before, pending, after] if pending else [p.user[0]]
            out += [content, p.user[1]]
            pending = ""
        elif role == "assistant":
            out += [p.assistant[0], content, p.assistant[1]]
    return "".join(out) + (p.generation if generation else "")


def _check(p: _Pieces, render: _Renderer, checks) -> None:
    for conversation, generation in checks:
        if _compose(p, conversation, generation) != render(conversation, generation):
            roles = ", ".join(role for role, _ in conversation)
            raise _Untranslatable(f"a conversation ({roles}) does not render as the concatenation of its turns")


def _go_template(p: _Pieces) -> str:
    """The Ollama (Go text/template) TEMPLATE for ``p``."""
    tokens: list[tuple[bool, str]] = []  # (is_action, text)

    def text(s: str) -> None:
        tokens.extend(_go_text(s))

    def do(*actions: str) -> None:
        tokens.extend((True, a) for a in actions)

    before, after = p.system_text
    if p.system == "block":
        shared = p.preamble if before.startswith(p.preamble) else ""
        text(shared)
        do("if .System")
        text(before[len(shared):])
        do(".System")
        text(after)
        if not shared and p.preamble:
            do("else")
            text(p.preamble)
        do("end")
    else:
        text(p.preamble)
    if p.system == "fold":
        do("$system := .System")
    do("range .Messages", 'if eq .Role "user"')
    text(p.user[0])
    if p.system == "fold":
        do("if $system")
        text(before)
        do("$system")
        text(after)
        do('$system = ""', "end")
    do(".Content")
    text(p.user[1])
    do('else if eq .Role "assistant"')
    text(p.assistant[0])
    do(".Content")
    text(p.assistant[1])
    do("end", "end")
    text(p.generation)
    return _serialize(tokens)


def _serialize(tokens: list[tuple[bool, str]]) -> str:
    """Actions that follow another action go on a line of their own, the newline trimmed by ``{{-``; no other
    trimming, so the pieces' own whitespace stays exactly as it is."""
    out, previous_action = [], False
    for is_action, s in tokens:
        if is_action:
            out.append(f"\n{{{{- {s} }}}}" if previous_action else f"{{{{ {s} }}}}")
        else:
            out.append(s)
        previous_action = is_action
    return "".join(out)


def _go_escaped(ch: str) -> bool:
    return ch in '{"' or not (ch.isprintable() or ch in "\n\t")


def _go_text(s: str) -> list[tuple[bool, str]]:
    """Literal text as template tokens: plain runs as text, ``{``, ``"`` and control characters as Go string
    literal actions (a ``{{`` would open an action; ``\"\"\"`` would end the Modelfile's TEMPLATE value)."""
    return [(escaped, _go_string("".join(run)) if escaped else "".join(run))
            for escaped, run in groupby(s, key=_go_escaped)]


def _go_string(s: str) -> str:
    named = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}

    def char(c: str) -> str:
        if c in named:
            return named[c]
        if c.isprintable():
            return c
        return f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"

    return '"' + "".join(char(c) for c in s) + '"'


def _quote(value: str, what: str) -> str:
    """``value`` as a Modelfile argument that Ollama's parser reads back exactly (it knows no escapes)."""
    if any(not (c.isprintable() or c in "\n\t") for c in value):
        raise UserError(f"the {what} {value!r} holds a control character, which an Ollama Modelfile cannot carry",
                        source="ollama Modelfile")
    if "\n" not in value and not value.startswith('""'):
        return f'"{value}"'
    # the parser ends a """ value at the first newline where the text so far, right-stripped, ends with """
    if any(value[:i].rstrip().endswith('"""') for i, c in enumerate(value) if c == "\n"):
        raise UserError(f'the {what} {value!r} has a line ending in """, which an Ollama Modelfile cannot carry',
                        source="ollama Modelfile")
    return f'"""{value}"""'
