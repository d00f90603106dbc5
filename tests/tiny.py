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
