"""A LoRA adapter as llama.cpp loads it (``llama-server -m base.gguf --lora adapter.gguf``).

As llama.cpp's ``convert_lora_to_gguf.py`` writes one: ``general.type`` = ``adapter``, ``adapter.type`` =
``lora``, ``adapter.lora.alpha``, and per adapted weight ``<gguf name>.lora_a`` (rank x in) and
``<gguf name>.lora_b`` (out x rank), F32 (that script's default). llama.cpp scales every pair by
alpha / rank; where peft scaled a module otherwise (rsLoRA's alpha / sqrt(rank), per-module rank or
alpha patterns) the difference is folded into ``lora_b``, so the product is the one peft trained.
The Q/K row order llama.cpp's Llama converter applies to the base weights is applied to ``lora_b``
(the rows of B @ A are the rows of B), as that script does through its LoRA tensor type.
"""

from __future__ import annotations

import math
from pathlib import Path

from lmtune.errors import UserError


def check_adapter(model, method: str) -> None:
    """Raise a UserError unless ``model`` is a peft LoRA llama.cpp can apply unmerged."""
    config = _config(model)
    if config is None or type(config).__name__ != "LoraConfig":
        raise UserError(f"llama.cpp loads LoRA adapters only, not {method}; export --format gguf without "
                        "--adapter (one merged model)", source="--adapter")
    if getattr(config, "use_dora", False):
        raise UserError("DoRA's magnitude vectors have no place in a llama.cpp adapter; export --format gguf "
                        "without --adapter (one merged model)", source="--adapter")
    if config.modules_to_save or getattr(config, "bias", "none") != "none" or getattr(config, "lora_bias", False):
        raise UserError("this adapter also trained whole modules or biases, which a llama.cpp LoRA cannot carry; "
                        "export --format gguf without --adapter (one merged model)", source="--adapter")


def _config(model):
    configs = getattr(model, "peft_config", None) or {}
    return configs.get(getattr(model, "active_adapter", "default"))


def lora_pairs(model) -> list[tuple[str, object, object]]:
    """``(base weight name, A, B)`` per adapted linear layer, B rescaled to llama.cpp's alpha / rank."""
    from peft.tuners.lora import LoraLayer

    adapter = model.active_adapter
    alpha = float(_config(model).lora_alpha)
    pairs = []
    for module_name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if adapter in getattr(module, "lora_embedding_A", {}):
            raise UserError("LoRA on the embeddings has no llama.cpp adapter form here; export --format gguf "
                            "without --adapter (one merged model)", source="--adapter")
        if adapter not in module.lora_A:
            continue
        a = module.lora_A[adapter].weight.detach().float()
        b = module.lora_B[adapter].weight.detach().float()
        wanted = float(module.scaling[adapter])  # what peft multiplies B @ A by
        if not math.isclose(wanted, alpha / a.shape[0], rel_tol=1e-6):
            b = b * (wanted / (alpha / a.shape[0]))
        pairs.append((module_name.removeprefix("base_model.model.") + ".weight", a, b))
    if not pairs:
        raise UserError("the adapter has no LoRA weights", source="--adapter")
    return pairs


def write_adapter(model, path: Path, name: str | None = None) -> None:
    """Write the LoRA weights of the peft ``model`` to the GGUF adapter file ``path``."""
    import gguf

    from lmtune.deploy.gguf import architecture, gguf_name, model_arch, permuted, write_file

    check_adapter(model, "this method")
    base = model.get_base_model()
    arch = architecture(type(base).__name__)
    hparams = base.config.to_dict()
    names = gguf.get_tensor_name_map(model_arch(arch), hparams["num_hidden_layers"])
    writer = gguf.GGUFWriter(path, arch.name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(_config(model).lora_alpha))
    if name:
        writer.add_name(name)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for weight_name, a, b in lora_pairs(model):
        if weight_name == "lm_head.weight":  # llama.cpp's converter refuses it too (tied to token_embd)
            raise UserError("LoRA on lm_head has no llama.cpp adapter form here; export --format gguf without "
                            "--adapter (one merged model)", source="--adapter")
        target = gguf_name(names, weight_name)
        writer.add_tensor(target + ".lora_a", a.numpy())
        writer.add_tensor(target + ".lora_b", permuted(weight_name, b, hparams, arch).contiguous().numpy())
    write_file(writer)
