"""Which strategies a run may use (``lmtune.train.strategy.check``), and how each holds a model
(``for_run``): refused before anything slow, with one line naming the recipe key."""

import importlib.util

import pytest
import torch
from conftest import run_cli

from lmtune import distributed
from lmtune.errors import UserError
from lmtune.recipe_parallel import DistributedConfig
from lmtune.train import strategy

SIZES = {"batch_size": 4, "grad_accum": 2, "max_grad_norm": 1.0}


def test_fp16_with_fsdp_is_refused_naming_training_precision():
    with pytest.raises(UserError) as caught:
        strategy.check(DistributedConfig(strategy="fsdp"), "fp16", **SIZES)
    assert caught.value.source == "training.precision" and "bf16" in caught.value.message
    strategy.check(DistributedConfig(strategy="fsdp"), "bf16", **SIZES)
    strategy.check(DistributedConfig(strategy="ddp"), "fp16", **SIZES)


def test_fsdp_cpu_offload_without_a_gpu_is_refused_naming_the_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as caught:
        strategy.check(DistributedConfig(strategy="fsdp", fsdp={"cpu_offload": True}), "bf16", **SIZES)
    assert caught.value.source == "training.distributed.fsdp.cpu_offload"


def test_deepspeed_offload_without_a_gpu_is_refused_naming_the_key(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for options, key in (({"offload_optimizer": True}, "offload_optimizer"),
                         ({"stage": 3, "offload_params": True}, "offload_params")):
        with pytest.raises(UserError) as caught:
            strategy.check(DistributedConfig(strategy="deepspeed", deepspeed=options), "bf16", **SIZES)
        assert caught.value.source == f"training.distributed.deepspeed.{key}"
        assert caught.value.message.startswith("there is no GPU here")
    config = tmp_path / "ds.json"  # a user's own config offloading, likewise
    config.write_text('{"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}')
    with pytest.raises(UserError) as caught:
        strategy.check(DistributedConfig(strategy="deepspeed", deepspeed={"config": str(config)}), "bf16", **SIZES)
    assert caught.value.source == "training.distributed.deepspeed.offload_optimizer"
    strategy.check(DistributedConfig(strategy="deepspeed", deepspeed={"stage": 3}), "bf16", **SIZES)  # runs here


def test_deepspeed_without_its_package_is_refused_naming_the_strategy(monkeypatch):
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed"
                        else found(name, *a))
    with pytest.raises(UserError) as caught:
        strategy.check(DistributedConfig(strategy="deepspeed"), "bf16", **SIZES)
    assert caught.value.source == "training.distributed.strategy"
    assert "pip install deepspeed" in caught.value.message


def test_a_deepspeed_json_that_contradicts_the_recipe_is_reported_before_the_machine_check(tmp_path):
    config = tmp_path / "ds.json"
    config.write_text('{\n  "train_micro_batch_size_per_gpu": 16,\n  "zero_optimization": {"stage": 2}\n}\n')
    section = DistributedConfig(strategy="deepspeed", deepspeed={"config": str(config)})
    with pytest.raises(UserError) as caught:
        strategy.check(section, "bf16", **SIZES)
    assert caught.value.source == f"{config}:2"
    assert "16" in caught.value.message and "training.batch_size" in caught.value.message


def test_fsdp_shards_only_with_more_than_one_process():
    one, two = distributed.World(), distributed.World(rank=1, size=2, local_rank=1)
    assert type(strategy.for_run("fsdp", one)) is strategy.Replicated
    assert isinstance(strategy.for_run("fsdp", two), strategy.Sharded)
    assert type(strategy.for_run("ddp", two)) is strategy.Replicated


def test_deepspeed_runs_its_engine_with_one_process_too():
    config = {"zero_optimization": {"stage": 3}}
    held = strategy.for_run("deepspeed", distributed.World(), deepspeed=config)
    assert isinstance(held, strategy.ZeRO) and held.config is config and held.name == "deepspeed"


def test_lmtune_train_offloading_deepspeed_here_says_one_line_and_writes_nothing(recipe_file, tmp_path):
    code, out = run_cli("train", recipe_file(), "--out", tmp_path / "runs",
                        "--set", "training.distributed.strategy=deepspeed",
                        "--set", "training.distributed.deepspeed.offload_optimizer=true")
    assert code == 2
    assert out.strip().splitlines()[-1].startswith("error: training.distributed.deepspeed.offload_optimizer: ")
    assert "Traceback" not in out and not (tmp_path / "runs").exists()


def test_a_run_without_deepspeed_never_imports_it(tmp_path):
    """DeepSpeed is installed (``requirements.txt``), and importing it takes about two seconds: a ddp run, the
    loop's steps and checkpoints included, must not pay for it (accelerate's ``unwrap_model`` would)."""
    import subprocess
    import sys
    from pathlib import Path

    script = ("import sys\n"
              "from tiny import build_tokenizer, method_model, train_examples, train_settings\n"
              "from lmtune.train import loop\n"
              "tok = build_tokenizer()\n"
              "loop.train(method_model(tok), train_examples(tok), [], train_settings(save_every=2),\n"
              f"           {str(tmp_path)!r}, tok.pad_token_id, quiet=True)\n"
              "assert 'deepspeed' not in sys.modules, 'deepspeed was imported'\n")
    tests = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tests,
                          env={**__import__("os").environ, "PYTHONPATH": str(tests)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "checkpoints").is_dir()  # the checkpoint path unwrapped the model too
