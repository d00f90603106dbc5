"""Memory of a training run, broken down, from the model's config on the meta device (no weights loaded).

The model is built from its config under ``torch.device("meta")`` (like ``accelerate estimate-memory``) and the
recipe's method applied to it there, so parameter counts (trainable, frozen, tied) are the real model's. Then:

- weights: each parameter in the dtype it will have (``model.dtype`` resolved; trainable adapters and heads are
  fp32 over a low-precision base; a 4-bit base stores its body's linear weights in NF4 with double quantization,
  4.127 bits per weight, and the rest in fp32 as ``prepare_model_for_kbit_training`` leaves it);
- gradients: one per trainable parameter, in its dtype; optimizer state: AdamW's two moments per trainable
  parameter, in its dtype (fp32 for fp32 parameters);
- autocast copies: under bf16/fp16 autocast, fp32 weights are cast for each matrix product and the copy is
  kept for the backward pass (2 bytes per matrix weight);
- activations: what autograd keeps for the backward pass, per token of the largest micro-batch (``B``: bytes
  of the compute dtype; ``R``: of the residual stream, 4 over fp32 weights; ``h`` hidden, ``q`` query width,
  ``i`` MLP width)::

      per layer   4 x 2h            the two norms keep their input, in fp32
                  + B x 4q          attention (SDPA) keeps q, k, v and its output
                  + B x 3i          the gated MLP keeps gate, its activation and up (1i for a plain MLP)
      per token   layers x per layer + 4h (final norm)
                  + B x (inputs of every trained linear map, LoRA's rank-r inputs, what IA3 scales)
                  + 4 x (elements of trained norms) + R x (inputs LoRA dropout copies)
      output      targets x vocabulary x 4 (log-softmax kept; the output layer runs only at target positions)
                  + one chunk's logits in flight
      DoRA        14.5 bytes per adapted base weight (its weight norm, recomputed each step)

  The terms were read off what ``torch.autograd.graph.saved_tensors_hooks`` sees in a step of a Llama decoder
  (transformers 5.23, peft 0.21, SmolLM2's shapes: within 3% for LoRA, DoRA, bottleneck adapters and full
  fine-tuning under bf16 autocast, 13% low for IA3, 19% high in plain fp32, where no autocast copies are made).
  With gradient checkpointing each layer keeps only its input (``R h`` per token) and one layer's activations
  exist at a time. Attention scores are not kept (SDPA); an ``eager`` attention adds ``2B`` per head per key
  position. A process holds more than autograd keeps (the backward pass's own buffers, the allocator's free
  lists), so :mod:`lmtune.estimate` compares the formula with the peak the timed steps measured on this machine
  and reports the ratio (the calibration);
- evaluation KV cache: keys and values of every layer for one evaluation batch of the longest test prompt plus
  the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmtune.train import fsdp

MB = 2**20
#: Bits per weight of an NF4 base with double quantization (blocks of 64, 8-bit absmax, fp32 per 256 blocks).
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "nf4": NF4_BITS / 8}
CHUNK = 4096  # target positions per output-layer chunk (lmtune.train.loss.CHUNK)
#: DoRA keeps about this many bytes per adapted base weight for its weight norm (measured: peft 0.21, bf16 autocast).
DORA_BYTES = 14.5


@dataclass(frozen=True)
class Params:
    """What the meta model says: parameter counts by role, and the shapes the activation formula needs."""

    total: int
    trainable: int
    embedding: int  # the input embedding (a lookup: no matrix product)
    output: int  # the output layer (LM head), run only at target positions; 0 for a head model
    matmul: int  # weights of every linear map, output layer included
    quantizable: int  # frozen linear weights of the body: what a 4-bit base stores in NF4
    kept_inputs: int  # per token: elements kept for weight gradients (inputs of trained linears, LoRA, IA3)
    trained_norms: int  # per token: elements of norms whose weights train (full fine-tuning)
    dora_weights: int  # base weights under DoRA (it recomputes the adapted weight's norm every step)
    dropout_saved: int  # per token: input elements copied by adapter dropout
    layers: int
    hidden: int
    intermediate: int
    heads: int
    q_width: int
    kv_width: int
    vocab: int
    gated: bool
    attention: str  # transformers' attention implementation (sdpa, eager, ...)
    largest_layer: int = 0  # parameters of the largest decoder (or encoder) layer: what sharding gathers at once
    in_layers: int = 0  # parameters inside those layers (the rest, embeddings and heads, is one more unit)


@dataclass(frozen=True)
class Setup:
    """How the run holds the model: dtypes (``fp32``/``bf16``/``fp16``/``nf4``) and the switches that matter."""

    weights: str  # dtype the base loads in (``nf4`` for a 4-bit base)
    trainable: str  # dtype of the trained parameters
    compute: str  # what forward and backward compute in
    checkpointing: bool
    full_logits: bool = False  # soft prompts: the model's own forward computes logits everywhere


def meta_params(config, method, options: dict, freeze: dict, head_labels: int | None) -> Params:
    """Build the model from ``config`` on the meta device, apply ``method`` there and count its parameters.

    Args:
        config: the model's transformers config.
        method: the registered method (:mod:`lmtune.methods`); a 4-bit one is applied as plain LoRA here.
        options / freeze: ``method.peft`` and ``method.freeze``.
        head_labels: outputs of a sequence-classification head, or None for a causal LM.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from lmtune.methods.lora import Lora
    from lmtune.methods.qlora import QLora

    with torch.device("meta"):
        if head_labels is not None:
            config.num_labels = head_labels
            model = AutoModelForSequenceClassification.from_config(config)
        else:
            model = AutoModelForCausalLM.from_config(config)
        model = (Lora() if isinstance(method, QLora) else method).apply(model, options, freeze)
    return _count(model, config, head_labels is not None)


def _count(model, config, head: bool) -> Params:
    from transformers.pytorch_utils import Conv1D

    out_weight = None if head else model.get_output_embeddings().weight
    matmul = frozen_linear = 0
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, Conv1D)):
            matmul += module.weight.numel()
            if not module.weight.requires_grad and module.weight is not out_weight:
                frozen_linear += module.weight.numel()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden, heads = text.hidden_size, text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    names = [name for name, _ in model.named_modules()]
    kept, dora = _kept_inputs(model, out_weight)
    units = [sum(p.numel() for p in layer.parameters()) for layer in fsdp.layers(model)]
    return Params(total=sum(p.numel() for p in model.parameters()), trainable=trainable,
                  embedding=model.get_input_embeddings().weight.numel(),
                  output=0 if out_weight is None else out_weight.numel(), matmul=matmul, quantizable=frozen_linear,
                  kept_inputs=kept, trained_norms=_trained_norms(model), dora_weights=dora,
                  dropout_saved=_dropout_inputs(model), layers=text.num_hidden_layers, hidden=hidden,
                  intermediate=getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * hidden,
                  heads=heads, q_width=heads * head_dim, kv_width=kv_heads * head_dim,
                  vocab=getattr(text, "vocab_size", 0) or 0,
                  gated=any(n.endswith(("gate_proj", "gate_up_proj", "w1")) for n in names),
                  attention=str(getattr(config, "_attn_implementation", None) or "sdpa"),
                  largest_layer=max(units, default=0), in_layers=sum(units))


def _kept_inputs(model, out_weight) -> tuple[int, int]:
    """Per token, the elements kept for weight gradients (inputs of trained linear maps, LoRA's rank-r inputs,
    the tensors IA3 scales), the output layer left out; and the base weights under DoRA."""
    from transformers.pytorch_utils import Conv1D

    kept = dora = 0
    inside: set[int] = set()
    for module in model.modules():
        lora_a = getattr(module, "lora_A", None)
        if isinstance(lora_a, torch.nn.ModuleDict) and len(lora_a) and hasattr(module, "base_layer"):
            inside.update(id(m) for part in ("lora_A", "lora_B") for m in getattr(module, part).values())
            kept += module.in_features + sum(a.out_features for a in lora_a.values())
            magnitude = getattr(module, "lora_magnitude_vector", None)
            dora += module.base_layer.weight.numel() if magnitude is not None and len(magnitude) else 0
        elif hasattr(module, "ia3_l") and hasattr(module, "base_layer"):
            kept += module.in_features if module.is_feedforward else module.out_features
        elif isinstance(module, (torch.nn.Linear, Conv1D)) and id(module) not in inside and \
                module.weight.requires_grad and module.weight is not out_weight:
            kept += module.weight.shape[1] if isinstance(module, torch.nn.Linear) else module.weight.shape[0]
    return kept, dora


def _trained_norms(model) -> int:
    """Per token, the elements of norms whose weights train (each keeps its normalized input for that gradient)."""
    return sum(p.numel() for name, module in model.named_modules() if "norm" in type(module).__name__.lower()
               for p in module.parameters(recurse=False) if p.requires_grad and p.ndim == 1)


def _dropout_inputs(model) -> int:
    """Per token: input elements that LoRA dropout copies (one per adapted module with dropout > 0)."""
    found = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, torch.nn.ModuleDict) and hasattr(module, "in_features"):
            if any(isinstance(d, torch.nn.Dropout) and d.p > 0 for d in dropouts.values()):
                found += module.in_features
    return found


def breakdown(params: Params, setup: Setup, micro: dict, eval_rows: int, eval_length: int) -> dict:
    """The run's memory in MB, item by item (see the module docstring for every formula).

    Args:
        params: from :func:`meta_params`.
        setup: dtypes and switches.
        micro: the largest micro-batch of the run (``rows``, ``width``, ``targets``).
        eval_rows / eval_length: one evaluation batch: rows, and tokens per row (prompt and answer).
    """
    frozen = params.total - params.trainable
    weights: dict[str, float] = {}
    if setup.weights == "nf4":
        _add(weights, "nf4", params.quantizable * BYTES["nf4"])
        _add(weights, "fp32", (frozen - params.quantizable) * 4)
    else:
        _add(weights, setup.weights, frozen * BYTES[setup.weights])
    _add(weights, setup.trainable, params.trainable * BYTES[setup.trainable])
    low = setup.compute in ("bf16", "fp16")
    copies = params.matmul * BYTES[setup.compute] if low and setup.weights == "fp32" else 0
    plain, checkpointed = activations(params, setup, micro)
    kv = 2 * params.layers * params.kv_width * eval_rows * eval_length * BYTES[setup.compute]
    out = {"weights_by_dtype": {k: _mb(v) for k, v in weights.items()}, "weights": _mb(sum(weights.values())),
           "trainable_parameters": params.trainable, "total_parameters": params.total,
           "gradients": _mb(params.trainable * BYTES[setup.trainable]),
           "optimizer_state": _mb(2 * params.trainable * BYTES[setup.trainable]),
           "autocast_weight_copies": _mb(copies),
           "activations": _mb(plain), "activations_checkpointed": _mb(checkpointed),
           "activations_used": "checkpointed" if setup.checkpointing else "plain",
           "micro_batch": {k: micro[k] for k in ("rows", "width", "targets")},
           "eval_kv_cache": _mb(kv), "eval_batch": {"rows": eval_rows, "tokens": eval_length}}
    out["training_total"] = round(sum(out[k] for k in ("weights", "gradients", "optimizer_state",
                                                       "autocast_weight_copies")) +
                                  (out["activations_checkpointed"] if setup.checkpointing else out["activations"]), 3)
    out["evaluation_total"] = round(out["weights"] + out["eval_kv_cache"], 3)
    return out


def activations(params: Params, setup: Setup, micro: dict) -> tuple[float, float]:
    """Bytes of activations for the micro-batch, without and with gradient checkpointing."""
    b = BYTES[setup.compute]
    r = 4 if setup.weights in ("fp32", "nf4") else BYTES[setup.weights]  # the residual stream
    h = params.hidden
    # Per layer: two norms keep their input (in fp32), attention its q, k, v and output, the MLP its nonlinearity's
    # operands.
    layer = 2 * 4 * h + 4 * b * params.q_width + (3 if params.gated else 1) * b * params.intermediate
    tokens = micro["rows"] * micro["width"]
    if params.attention == "eager":  # scores and probabilities of every head, per query token and key position
        layer += 2 * b * params.heads * micro["width"]
    trained = b * params.kept_inputs + 4 * params.trained_norms + r * params.dropout_saved
    targets = tokens if setup.full_logits else micro["targets"]
    output = targets * params.vocab * 4 + (b + 4) * min(targets, CHUNK) * params.vocab if params.output else 0
    dora = DORA_BYTES * params.dora_weights
    plain = tokens * (params.layers * layer + 4 * h + trained) + output + dora
    per_layer = layer + trained / max(params.layers, 1)
    checkpointed = tokens * ((params.layers + 1) * r * h + per_layer) + output + dora / max(params.layers, 1)
    return plain, checkpointed


def _add(into: dict[str, float], dtype: str, nbytes: float) -> None:
    if nbytes:
        into[dtype] = into.get(dtype, 0.0) + nbytes


def _mb(nbytes: float) -> float:
    return round(nbytes / MB, 3)
