"""Loading models and tokenizers from a resolved reference (see :mod:`lmtune.assets`), and what a loaded
model is (a soft-prompt model). Whether a reference is a run's ``final/`` is :func:`lmtune.run_dir.run_final`'s."""

from __future__ import annotations

import functools
import os
import socket
import urllib.parse
import urllib.request

import torch

from lmtune.assets import MODELS, ModelSource, _first_line, known_aliases, resolve_model
from lmtune.errors import UserError


def load_causal_lm(ref: str, dtype=torch.float32, **kwargs):
    """Load a causal language model and its tokenizer.

    Args:
        ref: any reference accepted by ``resolve_model``.
        dtype: parameter dtype.
        kwargs: more ``from_pretrained`` arguments (e.g. a method's ``quantization_config``).

    Returns:
        ``(model, tokenizer, source)``; the tokenizer always has a pad token.
    """
    from transformers import AutoModelForCausalLM

    source = resolve_model(ref)
    model = _from_pretrained(AutoModelForCausalLM, source, dtype=dtype, **kwargs)
    tokenizer = load_tokenizer(ref, source)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, source


def load_sequence_classifier(ref: str, num_labels: int, *, id2label: dict[int, str] | None = None,
                             dtype=torch.float32, **extra):
    """Load a model with a fresh sequence-classification head (e.g. ``minilm-l6``).

    Args:
        ref: any reference accepted by ``resolve_model``.
        num_labels: number of classes of the new head.
        id2label: optional class names, stored in the config so saved models keep them.
        dtype: parameter dtype.

    Returns:
        ``(model, tokenizer, source)``.
    """
    from transformers import AutoModelForSequenceClassification

    source = resolve_model(ref)
    kwargs = {"num_labels": num_labels, "dtype": dtype, **extra}
    if id2label:
        kwargs.update(id2label=dict(id2label), label2id={v: k for k, v in id2label.items()})
    model = _from_pretrained(AutoModelForSequenceClassification, source, **kwargs)
    tokenizer = load_tokenizer(ref, source)
    # Decoder models pool the last non-pad token and refuse batches without a pad id.
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, source


def is_causal_lm(ref: str) -> bool:
    """Whether the model's saved architecture has a language-modelling head (decoders do, encoders not)."""
    from transformers import AutoConfig

    config = _from_pretrained(AutoConfig, resolve_model(ref))
    if getattr(config, "is_encoder_decoder", False):
        return False
    archs = getattr(config, "architectures", None) or []
    if archs:
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    # No saved architecture: a model type that is a masked LM (BERT) is an encoder even if it has a decoder variant.
    return (config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            and config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES)


def pad_id(tokenizer) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its EOS."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def is_prompt_learning(model) -> bool:
    """True for peft soft-prompt models (prompt/prefix/p-tuning): their forward adds virtual tokens."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def load_tokenizer(ref: str, source: ModelSource | None = None):
    """Load the tokenizer of a model reference, with pad token = eos token if it has none.

    Args:
        ref: any reference accepted by ``resolve_model``.
        source: an already resolved source, to skip resolving again.
    """
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, source or resolve_model(ref))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _from_pretrained(auto_cls, source: ModelSource, **kwargs):
    if source.kind == "hub" and not _hub_reachable():
        kwargs["local_files_only"] = True  # the HF cache may still have it
        if auto_cls.__name__ != "AutoTokenizer":
            # transformers does not pass local_files_only on to its adapter lookup
            kwargs["adapter_kwargs"] = {"local_files_only": True}
    try:
        return auto_cls.from_pretrained(source.path, **kwargs)
    except (OSError, ValueError) as exc:  # HfHubHTTPError and connection errors are OSErrors
        cause = _first_line(exc)
    if source.kind == "hub":
        packaged = [a.name for a in MODELS.values() if a.hub_id == source.ref]
        hint = f"; alias {packaged[0]!r} is a packaged copy of this model" if packaged else ""
        raise UserError(f"model not found: not a known alias (known: {', '.join(known_aliases())}), "
                        "not a local directory, and the hub is unreachable or has no such model. "
                        f"Use an alias, a local directory or a .gguf file ({cause}){hint}",
                        source=source.ref)
    hint = "; delete that directory to rebuild it" if source.kind in ("alias", "gguf") else ""
    raise UserError(f"cannot load {auto_cls.__name__} from {source.path}: {cause}{hint}",
                    source=source.ref)


def _hub_reachable() -> bool:
    from huggingface_hub import constants

    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    return not (offline or constants.HF_HUB_OFFLINE) and _probe_hub(constants.ENDPOINT)


@functools.lru_cache(maxsize=4)
def _probe_hub(endpoint: str, timeout: float = 3.0) -> bool:
    """Quick TCP probe, so an unreachable hub fails in a second instead of after
    huggingface_hub's five retries with backoff (about 45 s per file)."""
    if urllib.request.getproxies().get("https"):
        return True  # only the proxy knows; let huggingface_hub try
    url = urllib.parse.urlsplit(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True
