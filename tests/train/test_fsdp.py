"""Sharded training (``training.distributed.strategy: fsdp``, ``lmtune.train.fsdp``): real torchrun processes
on gloo, torch's FSDP2 on CPU, the tiny model. Two sharded processes x batch 4 must train as one process x
batch 8, save a ``final/`` that is a normal model, and resume after a kill, with two processes or one."""

import json
import shutil

import pytest
from multiproc import (
    LMTUNE,
    assert_refused_before_launch,
    assert_same_losses,
    final_tensors,
    killed_after_checkpoint,
    losses,
    recipe_maker,
    train,
)

FSDP = "training.distributed.strategy=fsdp"
ZERO = "training.distributed.strategy=deepspeed"


@pytest.fixture(scope="module")
def recipes(tmp_path_factory, tiny_model_dir):
    return recipe_maker(tmp_path_factory.mktemp("fsdp"), tiny_model_dir)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_two_sharded_processes_of_batch_4_train_as_one_process_of_batch_8(recipes, tmp_path, method):
    peft = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0} if method == "lora" else {}
    lr = 1e-2 if method == "lora" else 1e-3  # as in test_parallel: full fine-tuning at its own learning rate
    recipe = recipes(f"fsdp-{method}", method={"name": method, "peft": peft}, training={"learning_rate": lr})
    train(LMTUNE, recipe, tmp_path / "one", "--set", "training.batch_size=8")
    train(LMTUNE, recipe, tmp_path / "two", "--processes", "2", "--set", FSDP)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(two) == sorted(one) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-4), step
    assert losses(tmp_path / "two", "validation") == pytest.approx(losses(tmp_path / "one", "validation"), abs=1e-4)
    # final/ is a normal (unsharded) model: the same tensors, whole, as the one-process run saved.
    whole, sharded = final_tensors(tmp_path / "one"), final_tensors(tmp_path / "two")
    assert sorted(sharded) == sorted(whole)
    for name, tensor in whole.items():
        assert sharded[name].shape == tensor.shape, name
        assert (sharded[name].float() - tensor.float()).abs().max().item() < 1e-3, name
    summary = json.loads((tmp_path / "two" / "eval.json").read_text())["training"]
    assert summary["strategy"] == "fsdp" and summary["processes"] == 2
    predictions = [(tmp_path / out / "predictions" / "finetuned.jsonl").read_text().splitlines()
                   for out in ("one", "two")]
    assert [json.loads(r)["prediction"] for r in predictions[1]] == [json.loads(r)["prediction"]
                                                                     for r in predictions[0]]


def test_a_killed_sharded_run_resumes_with_two_processes_or_one(recipes, tmp_path):
    recipe = recipes("fsdp-resume", training={"max_steps": 12, "save_every": 2, "eval_every": 100,
                                              "keep_checkpoints": 100})
    # The uninterrupted reference: one process of the same global batch (measured: 1e-6 apart).
    train(LMTUNE, recipe, tmp_path / "whole", "--set", "training.batch_size=8")
    killed_after_checkpoint(recipe, tmp_path / "two", 6, "--set", FSDP)
    assert max(losses(tmp_path / "two")) < 12  # it was stopped before the end
    shutil.copytree(tmp_path / "two", tmp_path / "one")  # the same killed run, continued two ways
    # One process continues the sharded checkpoint under DeepSpeed (whose optimizer has one group fewer).
    for name, extra in (("two", ["--processes", "2", "--set", FSDP]),
                        ("one", ["--set", ZERO, "--set", "training.batch_size=8"])):
        train(LMTUNE, recipe, tmp_path / name, "--resume", *extra)
        assert_same_losses(tmp_path / name, tmp_path / "whole", 1e-5)


def test_a_ddp_checkpoint_is_not_continued_sharded(recipes, tmp_path):
    recipe = recipes("ddp-then-fsdp", training={"max_steps": 4, "save_every": 2})
    out = tmp_path / "run"
    train(LMTUNE, recipe, out, "--processes", "2")
    refused = train(LMTUNE, recipe, out, "--resume", "--processes", "2", "--set", FSDP, check=False)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines()[-1].startswith("error: training.distributed.strategy: ")
    assert "Traceback" not in refused.stderr
    assert_refused_before_launch(recipe, out, "--set", FSDP, key="training.distributed.strategy")


def test_fp16_is_refused_for_sharded_training_before_anything_starts(recipes, tmp_path):
    done = train(LMTUNE, recipes("fsdp-fp16"), tmp_path / "run", "--processes", "2", "--set", FSDP,
                 "--set", "training.precision=fp16", check=False)
    assert done.returncode == 2
    assert "error: training.precision: " in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()
