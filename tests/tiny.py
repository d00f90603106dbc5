"""Tiny random models built from config, with a tokenizer trained on a few sentences: offline, seconds."""

from __future__ import annotations

from pathlib import Path

import torch

SENTENCES = [
    "the movie was great and i loved it", "the movie was terrible and boring",
    "this drug helped my pain a lot", "this drug gave me awful side effects",
    "it was fine, nothing special", "summarize the following text", "what is the sentiment of this review",
    "positive negative neutral", "question answer context instruction output input",
    "classify the text as positive or negative", "you are a helpful assistant",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer(chat: bool = True):
    """A byte-level BPE tokenizer trained on ``SENTENCES`` (vocab ~ 400)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "<eos>", "<bos>", "<|system|>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", bos_token="<bos>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(vocab_size: int, seed: int = 0):
    """A 2-layer Llama with hidden size 16."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=False)
    return LlamaForCausalLM(config)


def build_gpt2(vocab_size: int, seed: int = 0):
    """A 2-layer GPT-2 with hidden size 16 (Conv1D projections, absolute positions, tied embeddings)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=16, n_layer=2, n_head=2, n_positions=256,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                      pad_token_id=0, eos_token_id=1, bos_token_id=2))


def sharpened(model, std: float = 0.3, seed: int = 0):
    """``model`` with large random matrices: outputs depend clearly on the input, and every method
    moves the loss within a few steps (at the default 0.02 init the tiny models are nearly uniform)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def save_tiny(directory: Path, chat: bool = True, seed: int = 0) -> Path:
    """Write a tiny model + tokenizer that ``from_pretrained(directory)`` loads."""
    tok = build_tokenizer(chat)
    model = build_model(len(tok), seed)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def save_tiny_encoder(directory: Path, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 16) with the tiny tokenizer: an encoder, no LM head, like minilm-l6."""
    from transformers import BertConfig, BertModel

    tok = build_tokenizer(chat=False)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    BertModel(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


TRAIN_SENTENCES = ["the movie was great and i loved it", "the movie was terrible and boring",
                   "it was fine, nothing special", "this drug helped my pain a lot",
                   "this drug gave me awful side effects"]
TRAIN_LABELS = ["positive", "negative", "neutral", "positive", "negative"]


def train_examples(tok, n: int = 16) -> list:
    """``n`` encoded chat examples whose prompt and target lengths vary (so per-micro-batch averaging differs)."""
    from lmtune.data.encode import Encoder

    enc = Encoder(tok, max_length=64)
    return [enc.encode([{"role": "user", "content": " ".join([TRAIN_SENTENCES[i % 5]] * (1 + i % 3))}],
                       TRAIN_LABELS[i % 5] + (" indeed" * (i % 4))) for i in range(n)]


def method_model(tok, method: str = "lora", seed: int = 0):
    """The tiny model (always built with seed 0) with ``method`` applied after seeding torch with ``seed``."""
    from lmtune.methods import registry

    model = build_model(len(tok), seed=0)
    torch.manual_seed(seed)
    options = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0} if method == "lora" else {}
    return registry.get(method).apply(model, options, {})


def train_settings(**overrides):
    """Training loop settings for a few fp32 steps on the tiny model; keyword arguments override."""
    from lmtune.train import loop

    base = dict(learning_rate=1e-2, batch_size=4, grad_accum=1, max_steps=4, eval_every=None, log_every=1,
                precision="fp32", warmup_ratio=0.0, seed=3, max_grad_norm=None)
    return loop.Settings(**{**base, **overrides})


METHOD_SENTS = ["the movie was great and i loved it", "the movie was terrible and boring",
                "it was fine, nothing special", "this drug helped my pain a lot",
                "this drug gave me awful side effects"]
METHOD_LABELS = ["positive", "negative", "neutral", "positive", "negative"]


def method_examples(tok, n=8):
    """``n`` encoded user/assistant examples of varying target length, for the method tests."""
    from lmtune.data.encode import Encoder

    enc = Encoder(tok, max_length=64)
    return [enc.encode([{"role": "user", "content": METHOD_SENTS[i % 5]}],
                       METHOD_LABELS[i % 5] + " indeed" * (i % 3)) for i in range(n)]


def eval_logits(model, batch):
    """The model's logits on a collated batch, in eval mode and without gradients."""
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def lora_moved(model, std: float = 0.5, seed: int = 0):
    """``model`` with its LoRA B matrices random instead of zero: the adapter changes the output, so the policy
    differs from the reference (the same model with its adapter off)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


class Killed(Exception):
    """Stands for kill -9: nothing in the loop catches it, so no checkpoint is written on the way out."""


def fail_in_step(monkeypatch, n: int, exc: type[BaseException] = Killed):
    """Make the ``n``-th optimizer step of ``lmtune.train.loop`` raise ``exc`` inside its backward pass; return a
    function that undoes it."""
    from lmtune.train import loop

    real, calls = loop.accumulate_gradients, {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "accumulate_gradients", failing)
    return lambda: monkeypatch.setattr(loop, "accumulate_gradients", real)
