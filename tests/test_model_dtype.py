"""``model: {name, dtype}``: the recipe's two forms, the dtype a run's weights load in, and a bf16 run on a CPU."""

import json
import math

import pytest
import torch
import yaml

from lmtune import precision
from lmtune.errors import UserError
from lmtune.recipe import load_recipe, recipe_from_dict

MINIMAL = {"name": "x", "model": "m", "task": {"labels": ["a", "b"]}, "data": {"train": "t.jsonl"}}


def _problems(raw) -> dict[str, str]:
    with pytest.raises(UserError) as info:
        recipe_from_dict(raw)
    return dict(info.value.problems)


# --- the recipe ------------------------------------------------------------------------------


def test_the_string_form_is_a_model_name_with_dtype_auto():
    recipe = recipe_from_dict(MINIMAL)
    assert (recipe.model.name, recipe.model.dtype) == ("m", "auto")
    assert recipe.model_dump(mode="json")["model"] == {"name": "m", "dtype": "auto"}


def test_the_mapping_form_and_its_dump_validate_again():
    recipe = recipe_from_dict({**MINIMAL, "model": {"name": "m", "dtype": "bf16"}})
    assert (recipe.model.name, recipe.model.dtype) == ("m", "bf16")
    again = recipe_from_dict(recipe.model_dump(mode="json"))
    assert again.model == recipe.model


def test_an_unknown_key_inside_model_names_its_path_and_the_valid_keys():
    problems = _problems({**MINIMAL, "model": {"name": "m", "dtyp": "bf16"}})
    assert list(problems) == ["model.dtyp"]
    assert "unknown key 'dtyp'" in problems["model.dtyp"] and "valid keys here: name, dtype" in problems["model.dtyp"]


def test_a_bad_dtype_and_a_missing_name_are_named():
    problems = _problems({**MINIMAL, "model": {"name": "m", "dtype": "int8"}})
    assert list(problems) == ["model.dtype"] and "'int8'" in problems["model.dtype"]
    assert list(_problems({**MINIMAL, "model": {"dtype": "bf16"}})) == ["model.name"]


@pytest.mark.parametrize("value", [5, ["m"], None])
def test_a_model_that_is_neither_a_string_nor_a_mapping_is_refused(value):
    problems = _problems({**MINIMAL, "model": value})
    assert list(problems) == ["model"]
    assert "model reference" in problems["model"] or value is None


def test_set_model_dtype_on_a_string_model_keeps_the_name(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    recipe = load_recipe(path, ["model.dtype=bf16"])
    assert (recipe.model.name, recipe.model.dtype) == ("m", "bf16")
    assert load_recipe(path, ["model=other"]).model.name == "other"  # a string override, as before
    recipe = load_recipe(path, ["model.dtype=fp16", "model=other"])
    assert (recipe.model.name, recipe.model.dtype) == ("other", "auto")  # the whole model replaced


def test_explicit_training_precision_contradicting_a_low_precision_model_is_a_recipe_error():
    problems = _problems({**MINIMAL, "model": {"name": "m", "dtype": "bf16"}, "training": {"precision": "fp32"}})
    assert list(problems) == ["training.precision"]
    assert "contradicts model.dtype bf16" in problems["training.precision"]
    assert list(_problems({**MINIMAL, "model": {"name": "m", "dtype": "fp16"}, "training": {"precision": "bf16"}})
                ) == ["training.precision"]
    for choice in ("auto", "bf16"):  # auto follows the model; the same choice agrees with it
        recipe_from_dict({**MINIMAL, "model": {"name": "m", "dtype": "bf16"}, "training": {"precision": choice}})
    recipe_from_dict({**MINIMAL, "model": {"name": "m", "dtype": "fp32"}, "training": {"precision": "bf16"}})


def test_full_fine_tuning_of_fp16_weights_is_refused():
    problems = _problems({**MINIMAL, "model": {"name": "m", "dtype": "fp16"}, "method": {"name": "full"}})
    assert list(problems) == ["model.dtype"]
    recipe_from_dict({**MINIMAL, "model": {"name": "m", "dtype": "bf16"}, "method": {"name": "full"}})


def test_resume_treats_a_string_model_as_the_mapping_with_dtype_auto(recipe_file, tmp_path):
    from lmtune.resume_check import changes, check_resume

    out = tmp_path / "run"
    out.mkdir()
    saved = load_recipe(recipe_file(), []).model_dump(mode="json")
    saved["model"] = saved["model"]["name"]  # as a run of an lmtune before model.dtype wrote it
    (out / "recipe.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    (out / "manifest.json").write_text("{}")
    mapping = load_recipe(recipe_file(), ["model.dtype=auto"])  # written as {name: <same>, dtype: auto}
    assert mapping.model.name == saved["model"] and check_resume(mapping, out) == []
    assert check_resume(load_recipe(recipe_file(), []), out) == []
    bf16 = load_recipe(recipe_file(), ["model.dtype=bf16"])
    assert changes(bf16, out) == {"model.dtype": ("auto", "bf16")}
    with pytest.raises(UserError, match=r"model\.dtype: auto -> bf16"):
        check_resume(bf16, out)


def test_reports_read_both_forms(tmp_path):
    from lmtune.recipe_model import as_mapping, model_name
    from lmtune.report.run import load

    assert model_name("m") == model_name({"name": "m", "dtype": "bf16"}) == "m"
    assert model_name(None) is None and as_mapping("m") == {"name": "m", "dtype": "auto"}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(MINIMAL))
    assert load(tmp_path).recipe["model"] == {"name": "m", "dtype": "auto"}


# --- which dtype --------------------------------------------------------------------------------


def _gpu(monkeypatch, bf16: bool = True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


@pytest.mark.parametrize("full_weights", [False, True])
def test_auto_on_a_cpu_is_fp32(monkeypatch, full_weights):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.weights_dtype("auto", full_weights) == torch.float32
    assert precision.weights_dtype("auto", full_weights, device="cpu") == torch.float32


def test_auto_on_a_bf16_gpu_is_bf16_for_adapters_and_fp32_for_full_fine_tuning(monkeypatch):
    _gpu(monkeypatch)
    assert precision.weights_dtype("auto", full_weights=False) == torch.bfloat16
    assert precision.weights_dtype("auto", full_weights=True) == torch.float32
    # training.precision: fp32 or fp16 set by hand: the frozen base stays fp32 too
    assert precision.weights_dtype("auto", full_weights=False, compute="fp32") == torch.float32
    assert precision.weights_dtype("auto", full_weights=False, compute="fp16") == torch.float32
    assert precision.for_run("auto", "auto", False) == (torch.bfloat16, "bf16")
    assert precision.for_run("auto", "fp32", False) == (torch.float32, "fp32")


def test_auto_on_a_gpu_without_bf16_is_fp32(monkeypatch):
    _gpu(monkeypatch, bf16=False)
    assert precision.weights_dtype("auto", full_weights=False) == torch.float32


@pytest.mark.parametrize("choice, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)])
@pytest.mark.parametrize("full_weights", [False, True])
def test_an_explicit_dtype_is_taken_for_any_method(monkeypatch, choice, dtype, full_weights):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.weights_dtype(choice, full_weights) == dtype


def test_low_precision_weights_train_under_their_own_autocast(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)  # a CPU without native bf16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.resolve("auto") == "fp32"
    assert precision.compute_precision("auto", torch.bfloat16) == "bf16"
    assert precision.compute_precision("auto", torch.float16) == "fp16"
    assert precision.compute_precision("auto", torch.float32) == "fp32"
    assert precision.compute_precision("bf16", torch.float32) == "bf16"
    assert precision.for_run("bf16", "auto", True) == (torch.bfloat16, "bf16")
    assert precision.dtype_name(torch.bfloat16) == "bfloat16"


def test_upcast_trainable_casts_only_trainable_low_precision_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)).to(torch.bfloat16)
    model[0].requires_grad_(False)
    assert precision.upcast_trainable(model) == 2  # the second layer's weight and bias
    assert {p.dtype for p in model[0].parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model[1].parameters()} == {torch.float32}
    assert precision.upcast_trainable(model) == 0


# --- a bf16 run on a CPU ------------------------------------------------------------------------


@pytest.mark.parametrize("head", [False, True], ids=["label-scoring", "head"])
def test_lora_over_a_bf16_base_trains_and_evaluates_on_a_cpu(recipe_file, tmp_path, monkeypatch, capsys, head):
    from lmtune import lifecycle

    # A CPU without native bf16: training.precision auto resolves to fp32 and must follow the bf16 weights.
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    seen = {}
    save_final = lifecycle.save_final

    def spy(final, model, *args):
        seen.update({name: p.dtype for name, p in model.named_parameters()})
        seen.update({"trainable:" + name: p.dtype for name, p in model.named_parameters() if p.requires_grad})
        save_final(final, model, *args)

    monkeypatch.setattr(lifecycle, "save_final", spy)
    systems = ["majority", "finetuned"] if head else ["zero_shot", "finetuned"]
    path = recipe_file(task={"head": head}, eval={"systems": systems},
                       training={"max_steps": 3, "eval_every": 3, "log_every": 3})
    out = lifecycle.run_recipe(load_recipe(path, ["model.dtype=bf16"]), out=tmp_path / "run")
    said = capsys.readouterr().err
    assert "[2/5] model: loading " in said and " in bfloat16" in said
    assert "training.precision: bf16 to match model.dtype bf16" in said
    trainable = {k: v for k, v in seen.items() if k.startswith("trainable:")}
    assert trainable and set(trainable.values()) == {torch.float32}, trainable
    assert any("lora_" in k for k in trainable) and (not head or any("score" in k for k in trainable))
    frozen = {k: v for k, v in seen.items() if not k.startswith("trainable:") and "trainable:" + k not in seen}
    assert frozen and set(frozen.values()) == {torch.bfloat16}
    result = json.loads((out / "eval.json").read_text())
    assert result["training"]["model_dtype"] == "bfloat16" and result["training"]["precision"] == "bf16"
    assert "peak_memory_mb" in result["training"]
    assert (out / "final" / "adapter_model.safetensors").exists()
    assert set(result["results"]) == set(systems)
    for metrics in result["results"].values():
        assert math.isfinite(metrics["accuracy"])
    assert yaml.safe_load((out / "recipe.yaml").read_text())["model"]["dtype"] == "bf16"
