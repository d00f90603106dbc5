"""``lmtune export --format gguf|ollama``: the file llama.cpp's converter would write, read back by gguf's reader and
by transformers' GGUF loader (same tokens, same logits within the quantisation's error), the LoRA adapter form,
and what cannot be one GGUF file (a one-line error, nothing written)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli, sentiment_records, write_jsonl
from tiny import build_gpt2, build_tokenizer, sharpened

from lmtune.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = "<|user|>the movie was great and i loved it, 12345<eos><|assistant|>positive"


def _llama(tok, tie: bool = False, arch: str = "Llama", **extra):
    """A 2-layer decoder with grouped-query attention (4 heads, 2 KV heads) and 64-wide rows (Q8_0 blocks are 32)."""
    import transformers

    torch.manual_seed(0)
    config = getattr(transformers, f"{arch}Config")(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, tie_word_embeddings=tie, **extra)
    return sharpened(getattr(transformers, f"{arch}ForCausalLM")(config), std=0.2).eval()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The GQA Llama and the tiny tokenizer, saved as a base model directory."""
    path = tmp_path_factory.mktemp("gguf-base")
    tok = build_tokenizer()
    _llama(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _train(base, out, method: str, peft: dict):
    """A 3-step run (classification, the sentiment template and its system prompt) of ``method`` on ``base``."""
    from lmtune.lifecycle import run_recipe
    from lmtune.recipe import recipe_from_dict

    recipe = {"name": "Tiny_GGUF", "seed": 0, "model": str(base),
              "task": {"type": "classification", "labels": ["negative", "neutral", "positive"],
                       "template": "sentiment"},
              "data": {"train": str(write_jsonl(out.parent / "reviews.jsonl", sentiment_records())),
                       "fields": {"text": "review", "label": "rating"}},
              "method": {"name": method, "peft": peft},
              "training": {"max_steps": 3, "batch_size": 4, "learning_rate": 5e-2, "max_length": 64},
              "eval": {"systems": ["finetuned"]}}
    return run_recipe(recipe_from_dict(recipe), out=out, quiet=True)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, base):
    return _train(base, tmp_path_factory.mktemp("gguf-run") / "run", "lora",
                  {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0})


@pytest.fixture(scope="module")
def merged(lora_run):
    """The run's model with its LoRA folded in (fp32) and its tokenizer: what the GGUF must reproduce."""
    from lmtune.export import _merge, load_final

    model, tokenizer = load_final(lora_run / "final")
    return _merge(model, "lora").eval(), tokenizer


@pytest.fixture(scope="module")
def exported(lora_run, tmp_path_factory):
    """``{quant: output of lmtune export --format gguf --quant quant}``, one CLI export per quant."""
    root, outputs = tmp_path_factory.mktemp("gguf-out"), {}
    for quant in ("f16", "q8_0"):
        code, output = run_cli("export", lora_run, "--format", "gguf", "--quant", quant, "--out", root / quant)
        assert code == 0, output
        outputs[quant] = output
    return root


def _fields(path) -> tuple[dict, dict]:
    import gguf

    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items()}, {t.name: t for t in reader.tensors}


def test_gguf_holds_the_architecture_tokenizer_and_chat_template_of_the_run(exported, merged):
    model, tok = merged
    meta, tensors = _fields(exported / "f16" / "model.gguf")
    assert meta["general.architecture"] == "llama" and meta["general.type"] == "model"
    assert meta["general.name"] == "Tiny_GGUF" and meta["general.file_type"] == 1  # MOSTLY_F16
    expected = {"block_count": 2, "embedding_length": 64, "feed_forward_length": 128, "attention.head_count": 4,
                "attention.head_count_kv": 2, "rope.dimension_count": 16, "vocab_size": len(tok),
                "context_length": 512, "rope.freq_base": 10000.0}
    assert {k: meta[f"llama.{k}"] for k in expected} == expected
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(model.config.rms_norm_eps)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    vocab = sorted(tok.get_vocab(), key=tok.get_vocab().get)
    assert meta["tokenizer.ggml.tokens"] == vocab
    assert meta["tokenizer.ggml.token_type"][tok.eos_token_id] == 3 and meta["tokenizer.ggml.token_type"][300] == 1
    backend = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    assert meta["tokenizer.ggml.merges"] == [m if isinstance(m, str) else " ".join(m) for m in backend]
    assert meta["tokenizer.chat_template"] == tok.chat_template
    assert meta["tokenizer.ggml.eos_token_id"] == tok.eos_token_id == 1
    assert meta["tokenizer.ggml.bos_token_id"] == 2 and meta["tokenizer.ggml.add_bos_token"] is False
    assert "tokenizer.ggml.eot_token_id" not in meta  # the template ends turns with EOS itself
    hf = model.state_dict()
    assert len(tensors) == len(hf)  # untied: output.weight is written
    assert list(tensors["blk.0.attn_k.weight"].shape) == [64, 32]  # ggml order (in, out): 2 KV heads of 16
    assert list(tensors["token_embd.weight"].shape) == [64, len(tok)]
    for name, tensor in tensors.items():
        assert tensor.tensor_type.name == ("F32" if name.endswith("norm.weight") else "F16"), name


def _loaded_logits(directory, merged):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = merged
    gguf_tok = AutoTokenizer.from_pretrained(directory, gguf_file="model.gguf")
    assert gguf_tok(TEXT)["input_ids"] == tok(TEXT)["input_ids"]
    loaded = AutoModelForCausalLM.from_pretrained(directory, gguf_file="model.gguf").eval()
    ids = torch.tensor([tok(TEXT * 3)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids).logits[0], loaded(input_ids=ids).logits[0].float()


def _same_choices(got, want, clear: float, most: float) -> None:
    """The same next token wherever the run's model is clear about it (top-2 gap over ``clear``), and on ``most``
    of all positions (a random tiny model has near ties that any rounding flips)."""
    top = want.topk(2, dim=-1).values
    agree = got.argmax(-1) == want.argmax(-1)
    assert agree[top[:, 0] - top[:, 1] > clear].all()
    assert agree.float().mean() >= most


def test_f16_gguf_loads_in_transformers_with_the_runs_tokens_and_logits(exported, merged):
    want, got = _loaded_logits(exported / "f16", merged)
    # fp16 weights (~5e-4 relative rounding each): measured 0.012 on logits up to 6.7
    assert (got - want).abs().max() < 5e-3 * want.abs().max()
    _same_choices(got, want, clear=0.05, most=0.95)


def test_q8_0_gguf_quantizes_the_weight_matrices_and_stays_the_same_model(exported, merged):
    _, tensors = _fields(exported / "q8_0" / "model.gguf")
    for name, tensor in tensors.items():
        assert tensor.tensor_type.name == ("F32" if tensor.data.ndim == 1 else "Q8_0"), name
    want, got = _loaded_logits(exported / "q8_0", merged)
    # 8 bits per weight, one scale per 32: measured 0.54 on logits up to 6.7 (this tiny model's weights are large)
    assert (got - want).abs().max() < 0.15 * want.abs().max()
    assert torch.corrcoef(torch.stack([got.flatten(), want.flatten()]))[0, 1] > 0.99
    _same_choices(got, want, clear=0.25, most=0.8)


def test_cli_prints_the_files_and_the_llama_cpp_command(lora_run, tmp_path):
    code, output = run_cli("export", lora_run, "--format", "gguf", "--out", tmp_path / "g")
    assert code == 0, output
    assert f"wrote {tmp_path / 'g' / 'model.gguf'} (" in output and "kB)" in output
    assert f"llama-cli -m {tmp_path / 'g' / 'model.gguf'} -cnv" in output
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["model.gguf"]


@pytest.mark.parametrize("arch", ["Llama", "Qwen2", "Mistral"])
@pytest.mark.parametrize("tie", [False, True])
def test_each_architecture_round_trips_and_tied_embeddings_write_no_output(tmp_path, arch, tie):
    """Qwen2 (q/k/v biases, Q/K rows as they are) and Mistral (written as llama) beside Llama, tied or not."""
    from transformers import AutoModelForCausalLM

    from lmtune.deploy.gguf import write_model

    tok = build_tokenizer()
    model = _llama(tok, tie=tie, arch=arch)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.3)
    write_model(model, tok, tmp_path / "model.gguf", "f16", name="x")
    meta, tensors = _fields(tmp_path / "model.gguf")
    assert meta["general.architecture"] == ("qwen2" if arch == "Qwen2" else "llama")
    assert ("output.weight" in tensors) is not tie
    assert ("blk.0.attn_q.bias" in tensors) is (arch == "Qwen2")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model.gguf").eval()
    assert loaded.config.tie_word_embeddings is tie
    ids = torch.tensor([tok(TEXT * 3)["input_ids"]])
    with torch.no_grad():
        want, got = model(input_ids=ids).logits, loaded(input_ids=ids).logits
    assert (got - want).abs().max() < 5e-3 * want.abs().max()


def test_adapter_gguf_is_a_llama_cpp_lora_of_the_base_gguf(lora_run, exported, tmp_path):
    import gguf

    code, output = run_cli("export", lora_run, "--format", "gguf", "--adapter", "--out", tmp_path / "a")
    assert code == 0, output
    assert f"llama-server -m {tmp_path / 'a' / 'base.gguf'} --lora {tmp_path / 'a' / 'adapter.gguf'}" in output
    meta, lora = _fields(tmp_path / "a" / "adapter.gguf")
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert meta["adapter.lora.alpha"] == 8.0 and meta["general.architecture"] == "llama"
    _, base = _fields(tmp_path / "a" / "base.gguf")
    _, whole = _fields(exported / "f16" / "model.gguf")
    modules = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")  # all-linear
    assert sorted(lora) == sorted(f"blk.{b}.{m}.weight.lora_{ab}" for b in (0, 1) for m in modules for ab in "ab")
    for name in (f"blk.{b}.{m}.weight" for b in (0, 1) for m in modules):
        a, b = lora[name + ".lora_a"], lora[name + ".lora_b"]
        assert a.tensor_type.name == b.tensor_type.name == "F32"
        assert a.shape[0] == base[name].shape[0] and b.shape[1] == base[name].shape[1] and a.shape[1] == b.shape[0] == 4
        # base + alpha / rank * B @ A, all in llama.cpp's row order, is the merged model's weight
        adapted = gguf.dequantize(base[name].data, base[name].tensor_type) + 8.0 / 4 * (b.data @ a.data)
        np.testing.assert_allclose(adapted, gguf.dequantize(whole[name].data, whole[name].tensor_type), atol=2e-3)


def test_ollama_writes_the_same_gguf_and_a_modelfile(lora_run, exported, tmp_path):
    code, output = run_cli("export", lora_run, "--format", "ollama", "--out", tmp_path / "o")
    assert code == 0, output
    assert (tmp_path / "o" / "model.gguf").read_bytes() == (exported / "f16" / "model.gguf").read_bytes()
    text = (tmp_path / "o" / "Modelfile").read_text()
    assert text.startswith("FROM ./model.gguf\n") and 'PARAMETER stop "<eos>"' in text
    assert 'SYSTEM "You are a sentiment classifier. Answer with one word."' in text
    assert f"ollama create tiny_gguf -f {tmp_path / 'o' / 'Modelfile'}" in output


def _one_line_error(code: int, output: str, *needles: str) -> None:
    """Exit 2 and one ``error:`` line (transformers' own loading bar may come before it), no traceback."""
    assert code == 2, output
    lines = [line for line in output.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in output, output
    for needle in needles:
        assert needle in lines[0], output


def _fake_run(src, dest, **info_changes):
    shutil.copytree(src, dest)
    info = json.loads((dest / "final" / "lmtune.json").read_text())
    (dest / "final" / "lmtune.json").write_text(json.dumps({**info, **info_changes}))
    return dest


def test_what_cannot_be_one_gguf_file_is_refused_and_nothing_is_written(lora_run, tmp_path):
    gpt2 = tmp_path / "gpt2"
    tok = build_tokenizer()
    build_gpt2(len(tok)).save_pretrained(gpt2 / "final")
    tok.save_pretrained(gpt2 / "final")
    (gpt2 / "final" / "lmtune.json").write_text(json.dumps({
        "base_model": str(gpt2 / "final"), "method": "full", "task": {"type": "generation"}, "head": False}))
    code, output = run_cli("export", gpt2, "--format", "gguf", "--out", tmp_path / "out" / "x")
    _one_line_error(code, output, "GPT2LMHeadModel", "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM")
    head = _fake_run(lora_run, tmp_path / "head", head=True)
    code, output = run_cli("export", head, "--format", "ollama", "--out", tmp_path / "out" / "y")
    _one_line_error(code, output, "classification/regression head", "cannot be one GGUF file")
    ia3 = _fake_run(lora_run, tmp_path / "ia3", method="ia3")
    code, output = run_cli("export", ia3, "--format", "gguf", "--adapter", "--out", tmp_path / "out" / "z")
    _one_line_error(code, output, "error: --adapter:", "LoRA adapters only, not ia3")
    assert not (tmp_path / "out").exists()


def test_a_method_that_cannot_be_merged_is_refused(base, tmp_path):
    run = _train(base, tmp_path / "run", "prompt_tuning", {"num_virtual_tokens": 4})
    code, output = run_cli("export", run, "--format", "gguf", "--out", tmp_path / "out")
    _one_line_error(code, output, "a prompt_tuning model cannot be one GGUF file", "--format hf")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "needles"), [
    (["--format", "gguf", "--quant", "q4_k"], ["error: --quant:", "f16, bf16, q8_0"]),
    (["--quant", "q8_0"], ["error: --quant:", "--format gguf"]),
    (["--adapter"], ["error: --adapter:", "--format gguf"]),
    (["--format", "ollama", "--adapter"], ["error: --adapter:"]),
    (["--format", "gguf", "--dtype", "bf16"], ["error: --dtype:", "--quant"]),
    (["--format", "safetensors"], ["error: --format:", "hf, gguf, ollama"]),
])
def test_options_that_do_not_fit_the_format_are_refused(lora_run, tmp_path, args, needles):
    code, output = run_cli("export", lora_run, *args, "--out", tmp_path / "x")
    _one_line_error(code, output, *needles)
    assert not (tmp_path / "x").exists()


def test_a_non_empty_out_is_kept(lora_run, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    code, output = run_cli("export", lora_run, "--format", "gguf", "--out", tmp_path / "full")
    _one_line_error(code, output, "not empty")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


def test_end_of_turn_token_and_pre_tokenizers():
    from lmtune.deploy.gguf_tokenizer import pre_tokenizer, special_ids, stop_tokens

    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    tok.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|im_end|>{% endfor %}"
    ids = special_ids(tok)
    assert ids["eos"] == tok.eos_token_id and ids["eot"] == tok.convert_tokens_to_ids("<|im_end|>")
    assert stop_tokens(tok) == ["<eos>", "<|im_end|>"]
    byte_level = {"type": "ByteLevel", "use_regex": True}
    split = {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                                                   r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"}}
    assert pre_tokenizer({"pre_tokenizer": byte_level}) == "gpt-2"
    digits = {"type": "Digits", "individual_digits": True}
    assert pre_tokenizer({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [digits, byte_level]}}) == "smollm"
    no_regex = {"type": "ByteLevel", "use_regex": False}
    assert pre_tokenizer({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [split, no_regex]}}) == "llama-bpe"
    with pytest.raises(UserError, match="no pre-tokenizer"):
        pre_tokenizer({"pre_tokenizer": {"type": "Whitespace"}})
