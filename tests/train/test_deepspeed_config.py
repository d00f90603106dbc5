"""The DeepSpeed config of ``strategy: deepspeed`` (``lmtune.train.deepspeed_config``): written from the recipe,
read from a user's JSON with ``"auto"`` filled and contradictions refused, and the strategy refused where DeepSpeed
cannot run. Pure config work: no deepspeed package, no GPU."""

import importlib.util
import json
from pathlib import Path

import pytest

from lmtune.errors import UserError
from lmtune.recipe_parallel import DeepSpeedConfig
from lmtune.train import deepspeed_config as ds

RUN = {"batch_size": 4, "grad_accum": 2, "world_size": 2, "precision": "bf16", "max_grad_norm": 1.0}


def _user(tmp_path: Path, config, name="ds.json", **run):
    """``read_user`` on ``config`` (a dict written as indented JSON, or raw text) with ``RUN`` overridden by ``run``."""
    file = tmp_path / name
    file.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
    return ds.read_user(file, **{**RUN, **run})


def _refused(tmp_path: Path, config, **run) -> UserError:
    with pytest.raises(UserError) as err:
        _user(tmp_path, config, **run)
    return err.value


# --- build ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("stage", "offload_optimizer", "offload_params"), [
    (1, False, False), (1, True, False), (2, False, False), (2, True, False),
    (3, False, False), (3, True, False), (3, False, True), (3, True, True),
])
def test_build_zero_stage_and_offload(stage, offload_optimizer, offload_params):
    options = DeepSpeedConfig(stage=stage, offload_optimizer=offload_optimizer, offload_params=offload_params)
    config = ds.build(options, **RUN)
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["overlap_comm"] is True and zero["contiguous_gradients"] is True
    cpu = {"device": "cpu", "pin_memory": True}
    assert zero.get("offload_optimizer") == (cpu if offload_optimizer else None)
    assert zero.get("offload_param") == (cpu if offload_params else None)
    # a whole model can be saved from ZeRO-3 shards
    assert zero.get("stage3_gather_16bit_weights_on_model_save") is (True if stage == 3 else None)
    # left at DeepSpeed's default (true), so accelerate swaps lmtune's torch AdamW for DeepSpeedCPUAdam under offload
    assert "zero_force_ds_cpu_optimizer" not in config
    json.dumps(config, allow_nan=False)  # plain JSON, as the run directory records it


@pytest.mark.parametrize(("precision", "bf16", "fp16"), [("bf16", True, False), ("fp16", False, True),
                                                         ("fp32", False, False)])
def test_build_precision(precision, bf16, fp16):
    config = ds.build(DeepSpeedConfig(), **{**RUN, "precision": precision})
    assert config["bf16"] == {"enabled": bf16}
    assert config["fp16"]["enabled"] is fp16
    if fp16:  # dynamic loss scaling, DeepSpeed's defaults written out
        assert config["fp16"]["loss_scale"] == 0 and config["fp16"]["initial_scale_power"] == 16


def test_build_resolves_auto_precision():
    from lmtune import precision

    config = ds.build(DeepSpeedConfig(), **{**RUN, "precision": "auto"})
    resolved = precision.resolve("auto")
    assert config["bf16"]["enabled"] is (resolved == "bf16")
    assert config["fp16"]["enabled"] is False


@pytest.mark.parametrize(("max_grad_norm", "clipping"), [(1.0, 1.0), (0.5, 0.5), (None, 0.0)])
def test_build_gradient_clipping(max_grad_norm, clipping):
    assert ds.build(DeepSpeedConfig(), **{**RUN, "max_grad_norm": max_grad_norm})["gradient_clipping"] == clipping


@pytest.mark.parametrize(("world_size", "total"), [(1, 8), (4, 32)])
def test_build_batch_sizes(world_size, total):
    config = ds.build(DeepSpeedConfig(), **{**RUN, "world_size": world_size})
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 2
    assert config["train_batch_size"] == total


# --- read_user: filling ----------------------------------------------------------------------------------------


def test_auto_values_filled_from_recipe(tmp_path):
    config = _user(tmp_path, {
        "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto", "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto", "loss_scale": 0, "initial_scale_power": 16},
        "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": "auto",
                              "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                              "stage3_param_persistence_threshold": "auto"},
    }, world_size=4)
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 2
    assert config["train_batch_size"] == 4 * 2 * 4
    assert config["gradient_clipping"] == 1.0
    assert config["bf16"] == {"enabled": True}
    assert config["fp16"] == {"enabled": False, "loss_scale": 0, "initial_scale_power": 16}
    zero = config["zero_optimization"]
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    # sized from the model's hidden size: accelerate fills these when it prepares the model
    assert zero["reduce_bucket_size"] == zero["stage3_prefetch_bucket_size"] == "auto"


def test_missing_keys_filled_from_recipe(tmp_path):
    config = _user(tmp_path, {"zero_optimization": {"stage": 2}}, precision="fp16", max_grad_norm=None)
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 2
    assert config["train_batch_size"] == 16
    assert config["gradient_clipping"] == 0.0
    assert config["fp16"]["enabled"] is True and config["bf16"]["enabled"] is False
    assert config["zero_optimization"] == {"stage": 2}


def test_empty_object_gets_zero_stage_0(tmp_path):
    """accelerate refuses a config without zero_optimization; DeepSpeed's default is stage 0."""
    assert _user(tmp_path, {})["zero_optimization"] == {"stage": 0}


def test_matching_explicit_values_kept(tmp_path):
    given = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "train_batch_size": 16,
             "gradient_clipping": 1.0, "bf16": {"enabled": True}, "fp16": {"enabled": False},
             "zero_optimization": {"stage": 1}, "wall_clock_breakdown": False}
    assert _user(tmp_path, given) == given


def test_stage3_model_save_kept_when_set_false(tmp_path):
    """A user's explicit false is theirs (shards only); only "auto" and missing become true."""
    config = _user(tmp_path, {"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": False}})
    assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is False
    assert _user(tmp_path, {"zero_optimization": {"stage": 3}})["zero_optimization"] == {
        "stage": 3, "stage3_gather_16bit_weights_on_model_save": True}


def test_relative_path_read_from_base_dir(tmp_path, monkeypatch):
    recipe_dir = tmp_path / "recipes"
    (recipe_dir / "ds").mkdir(parents=True)
    (recipe_dir / "ds" / "zero2.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    monkeypatch.chdir(tmp_path)  # not the recipe's folder
    config = ds.read_user("ds/zero2.json", base_dir=recipe_dir, **RUN)
    assert config["zero_optimization"]["stage"] == 2


def test_resolve_reads_the_file_when_config_is_set(tmp_path):
    (tmp_path / "mine.json").write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    mine = ds.resolve(DeepSpeedConfig(stage=3, config="mine.json"), base_dir=tmp_path, **RUN)
    assert mine["zero_optimization"] == {"stage": 1}  # the file wins over stage/offload
    built = ds.resolve(DeepSpeedConfig(stage=3), **RUN)
    assert built == ds.build(DeepSpeedConfig(stage=3), **RUN)


# --- read_user: refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "wanted", "recipe_key"), [
    ("train_micro_batch_size_per_gpu", 8, 4, "training.batch_size"),
    ("gradient_accumulation_steps", 16, 2, "training.grad_accum"),
])
def test_batch_contradiction(tmp_path, key, value, wanted, recipe_key):
    text = json.dumps({"zero_optimization": {"stage": 2}, key: value}, indent=2)
    err = _refused(tmp_path, text)
    assert f"{key} is {value}" in err.message and f"{recipe_key} is {wanted}" in err.message
    line = next(i for i, row in enumerate(text.splitlines(), 1) if key in row)
    assert err.source == f"{tmp_path / 'ds.json'}:{line}"


def test_train_batch_size_contradiction(tmp_path):
    err = _refused(tmp_path, {"train_batch_size": 64, "zero_optimization": {"stage": 2}}, world_size=4)
    assert "train_batch_size is 64" in err.message
    assert "training.batch_size 4 x training.grad_accum 2 x 4 processes = 32" in err.message
    assert "set train_batch_size to 32" in err.message


def test_batch_values_must_be_whole_numbers(tmp_path):
    err = _refused(tmp_path, {"train_micro_batch_size_per_gpu": "4"})
    assert "whole number" in err.message and "training.batch_size" in err.message


def test_fp16_enabled_while_recipe_resolves_bf16(tmp_path):
    text = json.dumps({"bf16": {"enabled": "auto"}, "fp16": {"enabled": True}}, indent=2)
    err = _refused(tmp_path, text, precision="bf16")
    assert "fp16.enabled is true" in err.message and "training.precision is bf16" in err.message
    assert "training.precision: fp16" in err.message  # the other fix
    assert err.source == f"{tmp_path / 'ds.json'}:6"  # the "enabled" under fp16, not bf16's


def test_bf16_disabled_while_recipe_says_bf16(tmp_path):
    err = _refused(tmp_path, {"bf16": {"enabled": False}}, precision="bf16")
    assert "bf16.enabled is false" in err.message and "training.precision is bf16" in err.message


def test_bf16_enabled_while_recipe_says_fp32(tmp_path):
    err = _refused(tmp_path, {"bf16": {"enabled": True}}, precision="fp32")
    assert "bf16.enabled is true" in err.message and "training.precision is fp32" in err.message


@pytest.mark.parametrize("stage", [4, -1, "auto", "2"])
def test_zero_stage_out_of_range(tmp_path, stage):
    err = _refused(tmp_path, {"zero_optimization": {"stage": stage}})
    assert f"zero_optimization.stage is {json.dumps(stage)}" in err.message and "0, 1, 2 and 3" in err.message


def test_gradient_clipping_contradiction(tmp_path):
    err = _refused(tmp_path, {"gradient_clipping": 0.5}, max_grad_norm=1.0)
    assert "gradient_clipping is 0.5" in err.message and "training.max_grad_norm is 1.0" in err.message
    err = _refused(tmp_path, {"gradient_clipping": 1.0}, max_grad_norm=None)
    assert "training.max_grad_norm is null" in err.message


@pytest.mark.parametrize("section", ["optimizer", "scheduler"])
def test_own_optimizer_or_scheduler_refused(tmp_path, section):
    err = _refused(tmp_path, {section: {"type": "AdamW", "params": {"lr": "auto"}}})
    assert f'"{section}" section' in err.message and "remove the section" in err.message


def test_auto_without_a_recipe_value_refused(tmp_path):
    err = _refused(tmp_path, {"zero_optimization": {"stage": 2, "allgather_bucket_size": "auto"}})
    assert "zero_optimization.allgather_bucket_size is \"auto\"" in err.message


def test_invalid_json_reports_its_line(tmp_path):
    err = _refused(tmp_path, '{\n  "zero_optimization": {"stage": 2},\n  "train_batch_size": ,\n}\n')
    assert err.source == f"{tmp_path / 'ds.json'}:3"
    assert err.message.startswith("not valid JSON: Expecting value")
    assert str(err).startswith(f"{tmp_path / 'ds.json'}:3: not valid JSON: ")


@pytest.mark.parametrize(("text", "kind"), [("[1, 2]", "an array"), ('"zero2"', "a string"), ("null", "null")])
def test_top_level_not_an_object(tmp_path, text, kind):
    err = _refused(tmp_path, text)
    assert f"the top level is {kind}" in err.message and "JSON object" in err.message
    assert err.source == str(tmp_path / "ds.json")


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as err:
        ds.read_user("nope.json", base_dir=tmp_path, **RUN)
    assert err.value.source == "training.distributed.deepspeed.config"
    assert str(tmp_path / "nope.json") in err.value.message and "recipe's folder" in err.value.message


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(UserError) as err:
        ds.read_user(tmp_path, **RUN)
    assert err.value.source == "training.distributed.deepspeed.config" and "is a folder" in err.value.message


# --- check_runnable, write ---------------------------------------------------------------------------------------


def test_offload_without_cuda_refused_and_runnable_without_it():
    offloading = ds.build(DeepSpeedConfig(stage=3, offload_optimizer=True, offload_params=True), **RUN)
    with pytest.raises(UserError) as err:
        ds.check_runnable(offloading, cuda_available=False)
    assert err.value.source == "training.distributed.deepspeed.offload_optimizer"
    assert err.value.message.startswith("there is no GPU here: ZeRO's state is in CPU memory already")
    ds.check_runnable(offloading, cuda_available=True)
    ds.check_runnable(ds.build(DeepSpeedConfig(stage=3), **RUN), cuda_available=False)  # CPU accelerator, gloo
    params_only = {"zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}}}
    with pytest.raises(UserError) as err:
        ds.check_runnable(params_only, cuda_available=False)
    assert err.value.source == "training.distributed.deepspeed.offload_params"
    ds.check_runnable({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "none"}}},
                      cuda_available=False)


def test_missing_package_refused_with_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    with pytest.raises(UserError) as err:
        ds.check_runnable({}, cuda_available=True)
    assert err.value.source == "training.distributed.strategy" and "pip install deepspeed" in err.value.message


def test_runnable_with_the_package_only_looked_up(monkeypatch):
    looked_up = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: looked_up.append(name) or object())
    ds.check_runnable({}, cuda_available=True)  # no error, and deepspeed only looked up, never imported
    assert looked_up == ["deepspeed"]


def test_write_round_trip(tmp_path):
    config = ds.build(DeepSpeedConfig(stage=3, offload_optimizer=True, offload_params=True), **RUN)
    target = tmp_path / "run" / "deepspeed.json"
    ds.write(config, target)
    assert json.loads(target.read_text()) == config
    assert target.read_text().startswith('{\n  "')  # indented
    assert [p.name for p in target.parent.iterdir()] == ["deepspeed.json"]  # no temporary file left
