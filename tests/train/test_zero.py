"""DeepSpeed ZeRO (``training.distributed.strategy: deepspeed``, ``lmtune.train.zero``): real torchrun processes
on gloo, DeepSpeed's own engine on its CPU accelerator, the tiny model. Two ZeRO processes x batch 4 must train as
one process x batch 8, write their config and a ``final/`` that is a normal model, and resume after a kill with
two processes or one. The ZeRO checkpoint's form (whole tensors by name) is FSDP's, whose resume under ddp
``test_fsdp`` checks."""

import json
import shutil

import pytest
from multiproc import LMTUNE, assert_same_losses, final_tensors, killed_after_checkpoint, losses, recipe_maker, train

ZERO = "training.distributed.strategy=deepspeed"
STAGE3 = "training.distributed.deepspeed.stage=3"


@pytest.fixture(scope="module")
def recipes(tmp_path_factory, tiny_model_dir):
    return recipe_maker(tmp_path_factory.mktemp("zero"), tiny_model_dir)


def _same_final(out, reference):
    whole, zeroed = final_tensors(reference), final_tensors(out)
    assert sorted(zeroed) == sorted(whole)
    for name, tensor in whole.items():
        assert zeroed[name].shape == tensor.shape, name
        assert (zeroed[name].float() - tensor.float()).abs().max().item() < 1e-3, name


def _predictions(out):
    return [json.loads(r)["prediction"] for r in (out / "predictions" / "finetuned.jsonl").read_text().splitlines()]


def test_two_zero3_processes_of_batch_4_train_full_weights_as_one_process_of_batch_8_and_resume(recipes, tmp_path):
    """ZeRO-3 partitions the parameters too; two micro-batches a step (DeepSpeed must add their gradients up).
    Killed after a checkpoint, it resumes to the uninterrupted losses (ZeRO-3's state has no tensors before
    its first step: loading must create them)."""
    recipe = recipes("zero3-full", method={"name": "full", "peft": {}},
                     training={"learning_rate": 1e-3, "grad_accum": 2, "precision": "fp32", "max_steps": 6,
                               "save_every": 2, "keep_checkpoints": 100})
    train(LMTUNE, recipe, tmp_path / "one", "--set", "training.batch_size=8")
    train(LMTUNE, recipe, tmp_path / "two", "--processes", "2", "--set", ZERO, "--set", STAGE3)
    assert_same_losses(tmp_path / "two", tmp_path / "one")
    killed_after_checkpoint(recipe, tmp_path / "cut", 2, "--set", ZERO, "--set", STAGE3)
    assert max(losses(tmp_path / "cut")) < 6  # it was stopped before the end
    train(LMTUNE, recipe, tmp_path / "cut", "--resume", "--processes", "2", "--set", ZERO, "--set", STAGE3)
    assert_same_losses(tmp_path / "cut", tmp_path / "two", 1e-5)
    assert losses(tmp_path / "two", "validation") == pytest.approx(losses(tmp_path / "one", "validation"), abs=1e-4)
    _same_final(tmp_path / "two", tmp_path / "one")  # final/ is a normal model, gathered from the partitions
    summary = json.loads((tmp_path / "two" / "eval.json").read_text())["training"]
    assert summary["strategy"] == "deepspeed" and summary["processes"] == 2
    config = json.loads((tmp_path / "two" / "deepspeed.json").read_text())
    assert config["zero_optimization"]["stage"] == 3
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"],
            config["train_batch_size"]) == (4, 2, 16)
    assert _predictions(tmp_path / "two") == _predictions(tmp_path / "one")


def test_a_killed_zero2_lora_run_resumes_with_two_processes_or_one(recipes, tmp_path):
    """LoRA under ZeRO-2 trains as one process of the same global batch; killed after a checkpoint, it resumes to
    the uninterrupted losses with two processes, and with one under ddp (the checkpoint holds whole tensors by
    name)."""
    recipe = recipes("zero2-lora", training={"max_steps": 12, "save_every": 2, "eval_every": 100,
                                             "keep_checkpoints": 100, "precision": "fp32"},
                     method={"name": "lora", "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}})
    train(LMTUNE, recipe, tmp_path / "plain", "--set", "training.batch_size=8")
    train(LMTUNE, recipe, tmp_path / "whole", "--processes", "2", "--set", ZERO)
    assert_same_losses(tmp_path / "whole", tmp_path / "plain")
    _same_final(tmp_path / "whole", tmp_path / "plain")
    killed_after_checkpoint(recipe, tmp_path / "two", 6, "--set", ZERO)
    assert max(losses(tmp_path / "two")) < 12  # it was stopped before the end
    shutil.copytree(tmp_path / "two", tmp_path / "one")  # the same killed run, continued two ways
    # One process continues it without DeepSpeed, as one whole model (ddp, whose optimizer has one group more).
    for name, extra in (("two", ["--processes", "2", "--set", ZERO]),
                        ("one", ["--set", "training.distributed.strategy=ddp", "--set", "training.batch_size=8"])):
        train(LMTUNE, recipe, tmp_path / name, "--resume", *extra)
        # one process sums the batch in another order than two: float noise only
        assert_same_losses(tmp_path / name, tmp_path / "whole", 1e-5 if name == "two" else 1e-4)
    assert json.loads((tmp_path / "one" / "eval.json").read_text())["training"]["strategy"] == "ddp"
