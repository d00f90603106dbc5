"""The tokenizer of a GGUF file, as llama.cpp's ``convert_hf_to_gguf.py`` writes a byte-level BPE one.

``tokenizer.ggml.model`` is ``gpt2``; ``tokens`` are the vocabulary spelled in the byte alphabet (ids
the tokenizer lacks up to the model's vocabulary size become ``[PAD<id>]``, type UNUSED), ``token_type``
marks added special tokens CONTROL, other added tokens USER_DEFINED, the rest NORMAL (its
``get_vocab_base``); ``merges`` as ``"a b"`` strings (a space inside a part spelled U+0120+256, as its
``SpecialVocab`` does); ``pre`` names llama.cpp's pre-tokenizer (its split regex), recognised here
from the tokenizer's own pre-tokenizer instead of llama.cpp's hash of known checkpoints, so a
tokenizer trained from scratch gets the name of the regex it splits with. The chat template is
the one the run trained with, and the ids of BOS, EOS, padding and unknown, whether BOS/EOS are
added, and ``eot`` where the template ends a turn with a token other than EOS (``<|im_end|>``).
"""

from __future__ import annotations

import json

from lmtune.errors import UserError

# The split regexes of llama.cpp's pre-tokenizers (llama-vocab.cpp), as a tokenizer.json spells them.
_SPLITS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+": "qwen2",
}
# gguf.TokenType values
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5
_MARK = "lmtune-reply-7f3a"


def add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """Write ``tokenizer``'s vocabulary, merges, special ids and chat template to ``writer``."""
    spec = _backend(tokenizer)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer(spec))
    tokens, types = vocabulary(tokenizer, vocab_size)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges(spec))
    for kind, token_id in special_ids(tokenizer).items():
        getattr(writer, f"add_{kind}_token_id")(token_id)
    bos, eos = adds_bos_eos(tokenizer)
    writer.add_add_bos_token(bos)
    writer.add_add_eos_token(eos)
    if template := chat_template(tokenizer):
        writer.add_chat_template(template)


def _backend(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not _byte_level(spec):
        raise UserError("only byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM, Qwen2 style) can be written to "
                        f"GGUF by lmtune; this one is {model.get('type') or type(tokenizer).__name__} without "
                        "a ByteLevel pre-tokenizer; export --format hf --merge and convert it with llama.cpp's "
                        "convert_hf_to_gguf.py", source="tokenizer")
    return spec


def _steps(spec: dict | None) -> list[dict]:
    if not spec:
        return []
    return list(spec.get("pretokenizers") or []) if spec.get("type") == "Sequence" else [spec]


def _byte_level(spec: dict) -> bool:
    return any(step.get("type") == "ByteLevel" for step in _steps(spec.get("pre_tokenizer")))


def pre_tokenizer(spec: dict) -> str:
    """llama.cpp's name for the way this tokenizer splits text before its merges."""
    steps = _steps(spec.get("pre_tokenizer"))
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"  # GPT-2's regex, digits one by one
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        name = _SPLITS.get((steps[0].get("pattern") or {}).get("Regex"))
        if name:
            return name
    raise UserError(f"llama.cpp has no pre-tokenizer known to lmtune for this tokenizer's ({' + '.join(kinds)}); "
                    "supported: GPT-2, SmolLM, Llama 3 and Qwen2 splitting; export --format hf --merge and "
                    "convert it with llama.cpp's convert_hf_to_gguf.py", source="tokenizer")


def vocabulary(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens in id order up to ``vocab_size`` and their llama.cpp token types."""
    reverse = {index: token for token, index in tokenizer.get_vocab().items()}
    if reverse and max(reverse) >= vocab_size:
        raise UserError(f"the tokenizer has ids up to {max(reverse)} but the model embeds {vocab_size}; "
                        "train with the model's own tokenizer", source="tokenizer")
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        token = reverse.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(UNUSED)
        elif index in added:
            if not added[index].normalized:  # llama.cpp expects added tokens pre-normalized
                token = tokenizer.decode(tokenizer.encode(token, add_special_tokens=False))
            tokens.append(token)
            types.append(CONTROL if added[index].special or _looks_special(token) else USER_DEFINED)
        else:
            tokens.append(token)
            types.append(NORMAL)
    return tokens, types


def _looks_special(token: str) -> bool:
    """As llama.cpp's ``does_token_look_special``: ``<|...|>``, ``<pad>``, ``<unused...>`` are control tokens."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<unused") and token.endswith(">")))


def merges(spec: dict) -> list[str]:
    """The BPE merges as ``"left right"`` strings (spaces inside a part as chr(0x120), like gguf's SpecialVocab)."""
    found = spec["model"].get("merges") or []
    return [m if isinstance(m, str) else " ".join(part.replace(" ", chr(ord(" ") + 256)) for part in m)
            for m in found]


def special_ids(tokenizer) -> dict[str, int]:
    """``{"bos": id, "eos": id, "unk": id, "pad": id, "eot": id}``, the ones the tokenizer has."""
    found = {kind: getattr(tokenizer, f"{kind}_token_id", None) for kind in ("bos", "eos", "unk", "pad")}
    turn_end = turn_end_id(tokenizer)
    if turn_end is not None and turn_end != found["eos"]:
        found["eot"] = turn_end
    return {kind: int(index) for kind, index in found.items() if isinstance(index, int)}


def adds_bos_eos(tokenizer) -> tuple[bool, bool]:
    """Whether encoding a text puts BOS in front and EOS at the end (what llama.cpp must do too)."""
    ids = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return (bos is not None and ids[:1] == [bos]), (eos is not None and len(ids) > 1 and ids[-1] == eos)


def chat_template(tokenizer) -> str | None:
    """The tokenizer's chat template (the default one of several named ones)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template if isinstance(template, str) and template else None


def turn_end_id(tokenizer) -> int | None:
    """The special token the chat template closes an assistant turn with, or None (no template, or plain text)."""
    if not chat_template(tokenizer):
        return None
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _MARK}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # a template that needs other roles or tools: no turn end to learn from it
        return None
    if not isinstance(text, str) or _MARK not in text:
        return None
    after = tokenizer(text.split(_MARK, 1)[1], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return after[0] if after and after[0] in special else None


def stop_tokens(tokenizer) -> list[str]:
    """The texts of the tokens generation stops at: EOS, and the template's turn end when it is another token."""
    ids = special_ids(tokenizer)
    return [tokenizer.convert_ids_to_tokens(ids[kind]) for kind in ("eos", "eot") if kind in ids]
