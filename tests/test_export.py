"""``lmtune export``: the adapter as saved and merged into a plain model, the merged model's dtype, files others
can read (modes follow the umask), and what it refuses."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from conftest import run_cli, sentiment_records, write_jsonl

from lmtune.errors import UserError
from lmtune.export import export


def _lora_recipe(tmp, model_dir, max_steps: int) -> dict:
    """A LoRA classification recipe on the tiny model, its reviews written under ``tmp``."""
    data = write_jsonl(tmp / "reviews.jsonl", sentiment_records())
    return {"name": "x", "seed": 0, "model": str(model_dir),
            "task": {"type": "classification", "labels": ["negative", "neutral", "positive"],
                     "template": "sentiment"},
            "data": {"train": str(data), "fields": {"text": "review", "label": "rating"}},
            "method": {"name": "lora", "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
            "training": {"max_steps": max_steps, "batch_size": 4, "learning_rate": 5e-2, "max_length": 64},
            "eval": {"systems": ["finetuned"]}}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    from lmtune.lifecycle import run_recipe
    from lmtune.recipe import recipe_from_dict

    tmp = tmp_path_factory.mktemp("export-run")
    return run_recipe(recipe_from_dict(_lora_recipe(tmp, tiny_model_dir, 2)), out=tmp / "run", quiet=True)


def _dtypes(directory) -> set[str]:
    from safetensors import safe_open

    found = set()
    for path in directory.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            found |= {f.get_slice(name).get_dtype() for name in f.keys()}
    return found


def _export(*args, **kwargs):
    old = os.umask(0o022)  # the usual umask: group and others may read
    try:
        return export(*args, **kwargs)
    finally:
        os.umask(old)


def test_merged_export_in_bf16_loads_close_to_fp32(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM

    fp32 = _export(lora_run, tmp_path / "fp32", merge=True, dtype="fp32")
    bf16 = _export(lora_run, tmp_path / "bf16", merge=True, dtype="bf16")
    assert _dtypes(fp32) == {"F32"} and _dtypes(bf16) == {"BF16"}
    ids = torch.tensor([[5, 17, 42, 9, 3, 100, 7]])
    half = AutoModelForCausalLM.from_pretrained(bf16, dtype="auto").eval()
    assert half.dtype == torch.bfloat16
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(fp32, dtype=torch.float32).eval()(input_ids=ids).logits
        got = half(input_ids=ids).logits.float()
    torch.testing.assert_close(got, want, atol=3e-2, rtol=3e-2)


def test_auto_dtype_is_the_base_models(lora_run, tmp_path):
    # The tiny base model's config says float32 (what it was saved in).
    assert _dtypes(_export(lora_run, tmp_path / "auto", merge=True)) == {"F32"}
    with pytest.raises(UserError, match="fp64"):
        export(lora_run, tmp_path / "bad", merge=True, dtype="fp64")


@pytest.mark.parametrize("merge", [False, True])
def test_exported_files_are_readable_by_others(lora_run, tmp_path, merge):
    out = _export(lora_run, tmp_path / "out", merge=merge)
    entries = [out, *out.rglob("*")]
    assert any(p.suffix == ".safetensors" for p in entries)
    for path in entries:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o044 == 0o044, f"{path.name}: {oct(mode)}"
        assert mode & 0o022 == 0, f"{path.name}: {oct(mode)}"


def test_auto_reads_the_base_config_then_the_training_precision(tmp_path):
    from lmtune.export import _torch_dtype

    base = tmp_path / "base"
    base.mkdir()
    info = {"base_model": "gone", "base_model_source": {"path": str(base)}}
    (base / "config.json").write_text('{"torch_dtype": "bfloat16"}')
    assert _torch_dtype(tmp_path, info, "auto") == torch.bfloat16
    assert _torch_dtype(tmp_path, info, "fp16") == torch.float16
    (base / "config.json").write_text("{}")
    assert _torch_dtype(tmp_path, info, "auto") == torch.float32
    (tmp_path / "recipe.yaml").write_text("training:\n  precision: fp16\n")
    assert _torch_dtype(tmp_path, info, "auto") == torch.float16


@pytest.fixture(scope="module")
def cli_lora_run(tmp_path_factory, tiny_model_dir):
    """A 3-step LoRA run trained through ``lmtune train`` (the CLI path, where ``lora_run`` calls Python)."""
    import yaml

    tmp = tmp_path_factory.mktemp("export")
    (tmp / "r.yaml").write_text(yaml.safe_dump(_lora_recipe(tmp, tiny_model_dir, 3)))
    code, output = run_cli("train", tmp / "r.yaml", "--out", tmp / "run", "--quiet")
    assert code == 0, output
    return tmp / "run"


def test_export_adapter_loads_with_peft_and_merged_model_gives_the_same_logits(cli_lora_run, tiny_model_dir,
                                                                                 tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    code, output = run_cli("export", cli_lora_run, "--out", tmp_path / "adapter")
    assert code == 0, output
    code, output = run_cli("export", cli_lora_run, "--merge", "--out", tmp_path / "merged")
    assert code == 0, output
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    assert list((tmp_path / "merged").glob("*.safetensors"))

    ids = torch.tensor([[5, 17, 42, 9, 3, 100, 7]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    unmerged = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        want = unmerged(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    assert not torch.allclose(want, AutoModelForCausalLM.from_pretrained(tiny_model_dir)(input_ids=ids).logits)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_export_refuses_what_is_not_a_run_or_would_overwrite(cli_lora_run, tmp_path):
    code, output = run_cli("export", tmp_path, "--out", tmp_path / "x")
    assert code == 2 and "not a finished lmtune run" in output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    code, output = run_cli("export", cli_lora_run, "--out", tmp_path / "full")
    assert code == 2 and "not empty" in output
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
