"""A causal language model as one GGUF file, the way llama.cpp's ``convert_hf_to_gguf.py`` writes it.

Architecture metadata (``TextModel.set_gguf_parameters``): ``<arch>.block_count``, ``context_length``,
``embedding_length``, ``feed_forward_length``, ``attention.head_count`` / ``head_count_kv``,
``rope.freq_base`` (and ``rope.scaling.*`` for linear and YaRN scaling), ``attention.layer_norm_rms_epsilon``,
``attention.key_length`` / ``value_length`` where the config states ``head_dim``, ``general.file_type``;
Llama-family models add ``vocab_size`` and ``rope.dimension_count`` (``LlamaModel``), and Llama 3 RoPE
scaling a ``rope_freqs`` tensor. Mistral is written as ``llama``, as llama.cpp does.

Tensors keep the names gguf's ``get_tensor_name_map`` gives them (``token_embd``, ``blk.N.attn_q`` ...).
llama.cpp's Llama converter reorders the rows of Q and K (``LlamaModel.permute``): transformers
rotates the two halves of each head, llama.cpp interleaved pairs. Qwen2 keeps them (and has q/k/v
biases). A model whose output projection is its embedding matrix (tied, as SmolLM2) gets no
``output.weight``: llama.cpp then uses ``token_embd`` for both. 1-D tensors (norms, biases) stay F32;
Q8_0 applies to 2-D weights whose rows are a multiple of 32 long, others fall back to F16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lmtune.errors import UserError

#: ``--quant`` choices: the type of the 2-D weights.
QUANTS = ("f16", "bf16", "q8_0")


@dataclass(frozen=True)
class Arch:
    """How one transformers architecture is written."""

    name: str             # llama.cpp's architecture (gguf MODEL_ARCH_NAMES)
    permute_qk: bool      # llama.cpp's Llama converter reorders the Q/K rows for its RoPE
    llama_keys: bool      # vocab_size, rope.dimension_count and Llama 3 rope_freqs, as LlamaModel adds


ARCHITECTURES = {
    "LlamaForCausalLM": Arch("llama", True, True),
    "MistralForCausalLM": Arch("llama", True, True),
    "Qwen2ForCausalLM": Arch("qwen2", False, False),
}
_SKIP = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")


def check_quant(quant: str) -> None:
    if quant not in QUANTS:
        raise UserError(f"unknown quantization {quant!r}; use one of {', '.join(QUANTS)}", source="--quant")


def architecture(name: str | None, source: str = "model") -> Arch:
    """The way ``name`` (a transformers class such as ``LlamaForCausalLM``) is written, or a UserError."""
    if name not in ARCHITECTURES:
        raise UserError(f"GGUF export supports {', '.join(ARCHITECTURES)}, not {name or 'this model'}; "
                        "export --format hf instead", source=source)
    return ARCHITECTURES[name]


def model_arch(arch: Arch):
    """gguf's ``MODEL_ARCH`` member named ``arch.name``."""
    import gguf

    return next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch.name)


def write_model(model, tokenizer, path: Path, quant: str = "f16", name: str | None = None) -> None:
    """Write ``model`` (a plain transformers causal LM) and ``tokenizer`` to the GGUF file ``path``."""
    import gguf

    from lmtune.deploy.gguf_tokenizer import add_tokenizer

    check_quant(quant)
    arch = architecture(type(model).__name__)
    hparams = model.config.to_dict()
    vocab_size = model.get_input_embeddings().weight.shape[0]
    writer = gguf.GGUFWriter(path, arch.name)
    writer.add_type(gguf.GGUFType.MODEL)
    if name:
        writer.add_name(name)
    add_hparams(writer, hparams, arch, vocab_size)
    writer.add_file_type(_file_types()[quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_tokenizer(writer, tokenizer, vocab_size)
    for tensor_name, data in model_tensors(model, arch):
        array, qtype = quantize(tensor_name, data, quant)
        writer.add_tensor(tensor_name, array, raw_dtype=qtype)
    write_file(writer)


def add_hparams(writer, hparams: dict, arch: Arch, vocab_size: int) -> None:
    """The architecture keys llama.cpp's converter writes for a decoder of this config."""
    writer.add_block_count(hparams["num_hidden_layers"])
    writer.add_context_length(hparams["max_position_embeddings"])
    writer.add_embedding_length(hparams["hidden_size"])
    writer.add_feed_forward_length(hparams["intermediate_size"])
    writer.add_head_count(hparams["num_attention_heads"])
    writer.add_head_count_kv(hparams.get("num_key_value_heads") or hparams["num_attention_heads"])
    add_rope(writer, hparams, arch)
    writer.add_layer_norm_rms_eps(hparams["rms_norm_eps"])
    if (head_dim := hparams.get("head_dim")) is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch.llama_keys:
        writer.add_vocab_size(vocab_size)
        writer.add_rope_dimension_count(head_dim or hparams["hidden_size"] // hparams["num_attention_heads"])


def rope_parameters(hparams: dict) -> dict:
    """``rope_parameters`` (transformers 5) or ``rope_scaling`` with ``rope_type`` and ``rope_theta`` filled in."""
    params = dict(hparams.get("rope_parameters") or hparams.get("rope_scaling") or {})
    params.setdefault("rope_type", params.get("type") or "default")
    if params.get("rope_theta") is None and hparams.get("rope_theta") is not None:
        params["rope_theta"] = hparams["rope_theta"]
    return params


def add_rope(writer, hparams: dict, arch: Arch) -> None:
    """RoPE base frequency and scaling, as TextModel writes them (Llama 3 scaling is a tensor, see rope_freqs)."""
    import gguf

    params = rope_parameters(hparams)
    kind, factor = params["rope_type"], params.get("factor")
    if kind == "linear" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(factor)
    elif kind == "yarn" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(factor)
        writer.add_rope_scaling_orig_ctx_len(params["original_max_position_embeddings"])
    elif kind not in ("default", "linear", "yarn") and not (kind == "llama3" and arch.llama_keys):
        raise UserError(f"RoPE scaling {kind!r} is not written to GGUF by lmtune (default, linear, yarn and llama3 "
                        "are); export --format hf and convert with llama.cpp", source="model")
    if params.get("rope_theta") is not None:
        writer.add_rope_freq_base(params["rope_theta"])


def rope_freqs(hparams: dict):
    """Llama 3 RoPE scaling as llama.cpp stores it: one factor per rotary frequency (``rope_freqs.weight``)."""
    import torch

    params = rope_parameters(hparams)
    base = params.get("rope_theta", 10000.0)
    dim = hparams.get("head_dim") or hparams["hidden_size"] // hparams["num_attention_heads"]
    factor = params.get("factor", 8.0)
    low, high = params.get("low_freq_factor", 1.0), params.get("high_freq_factor", 4.0)
    old_context = params.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_context / low, old_context / high
    factors = []
    for freq in 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)):
        wavelen = 2 * math.pi / float(freq)
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)


def model_tensors(model, arch: Arch):
    """``(gguf name, fp32 numpy array)`` for every weight, Q/K reordered where llama.cpp reorders them."""
    import gguf

    hparams = model.config.to_dict()
    if arch.llama_keys and rope_parameters(hparams)["rope_type"] == "llama3":
        yield "rope_freqs.weight", rope_freqs(hparams).numpy()
    names = gguf.get_tensor_name_map(model_arch(arch), hparams["num_hidden_layers"])
    state = model.state_dict()
    tied = _tied(model)
    for hf_name, tensor in state.items():
        if hf_name.endswith(_SKIP) or (tied and hf_name == "lm_head.weight"):
            continue
        yield gguf_name(names, hf_name), permuted(hf_name, tensor.detach().float(), hparams, arch).numpy()


def _tied(model) -> bool:
    """The output projection is the embedding matrix (llama.cpp writes no ``output.weight`` then)."""
    out, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if out is None:
        return True
    a, b = out.weight, embed.weight
    return a.data_ptr() == b.data_ptr() or (a.shape == b.shape and bool((a == b).all()))


def gguf_name(names, hf_name: str) -> str:
    found = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if found is None:
        raise UserError(f"no GGUF name for the tensor {hf_name!r}; this model has modules llama.cpp's "
                        "architecture lacks; export --format hf instead", source="model")
    return found


def permuted(hf_name: str, data, hparams: dict, arch: Arch):
    """``data``, with the rows of Q and K in llama.cpp's RoPE order when the architecture needs it."""
    if not arch.permute_qk:
        return data
    n_head = hparams["num_attention_heads"]
    if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
        return permute(data, n_head, n_head)
    if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
        return permute(data, n_head, hparams.get("num_key_value_heads") or n_head)
    return data


def permute(weights, n_head: int, n_head_kv: int):
    """llama.cpp's ``LlamaModel.permute``: per head, the rows of the two rotary halves interleaved."""
    if n_head_kv != n_head:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _file_types() -> dict:
    import gguf

    types = gguf.LlamaFileType
    return {"f16": types.MOSTLY_F16, "bf16": types.MOSTLY_BF16, "q8_0": types.MOSTLY_Q8_0}


def quantize(name: str, data, quant: str):
    """``(array, GGML type)`` of one tensor, by llama.cpp's rules (1-D, norms and non-weights F32; Q8_0 else F16)."""
    import gguf

    types = gguf.GGMLQuantizationType
    if data.ndim <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        qtype = types.F32
    else:
        qtype = {"f16": types.F16, "bf16": types.BF16, "q8_0": types.Q8_0}[quant]
    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError:  # rows not a multiple of the block size
        return gguf.quants.quantize(data, types.F16), types.F16


def write_file(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def command(out: Path, adapter: bool = False) -> str:
    """The llama.cpp command line that runs an export in ``out``."""
    if adapter:
        return f"llama-server -m {out / 'base.gguf'} --lora {out / 'adapter.gguf'}"
    return f"llama-cli -m {out / 'model.gguf'} -cnv"
