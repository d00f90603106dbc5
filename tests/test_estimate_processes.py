"""``lmtune estimate --processes N``: the steps of N processes, one process's memory under each strategy (ZeRO as
DeepSpeed's own estimators count it), the fit and the projection onto N devices."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from estimate_cases import LORA, MICRO, counts_of, meta_params
from typer.testing import CliRunner

from lmtune import tasks
from lmtune.cli import app
from lmtune.distributed import World
from lmtune.estimate import advice, memory, plan, sharding
from lmtune.methods import registry
from lmtune.recipe import load_recipe
from lmtune.train.batches import MicroBatches
from lmtune.train.objectives import shared_batches
from lmtune.train.parallel import shard

pytestmark = pytest.mark.usefixtures("one_thread")

MIXED = memory.Setup(weights="fp32", trainable="fp32", compute="bf16", checkpointing=False)


def _states(shared: dict) -> float:
    """Model states on the device: what DeepSpeed's estimators count (no activations, no autocast copies)."""
    return sum(shared["device"][k] for k in ("weights", "gradients", "optimizer_state", "gathered"))


@pytest.mark.parametrize("processes", [1, 2, 8])
@pytest.mark.parametrize("offload", [False, True])
def test_zero_of_full_fine_tuning_is_what_deepspeeds_own_estimators_say(tiny_model_dir, processes, offload):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    full = meta_params(tiny_model_dir, "full", {})
    assert full.largest_layer > 0 and full.in_layers < full.total
    whole = memory.breakdown(full, MIXED, MICRO, 1, 1)
    two = sharding.per_process(whole, full, MIXED, sharding.Layout("deepspeed", processes, stage=2,
                                                                   offload_optimizer=offload))
    _, gpu = estimate_zero2_model_states_mem_needs(full.total, num_gpus_per_node=processes, cpu_offload=offload)
    assert _states(two) == pytest.approx(gpu / memory.MB, abs=0.01)
    for params_offloaded in ([False, True] if offload else [False]):
        three = sharding.per_process(whole, full, MIXED, sharding.Layout(
            "deepspeed", processes, stage=3, offload_optimizer=offload, offload_params=params_offloaded))
        _, gpu, _ = estimate_zero3_model_states_mem_needs(full.total, full.largest_layer, num_gpus_per_node=processes,
                                                          cpu_offload=offload, cpu_offload_params=params_offloaded)
        assert _states(three) == pytest.approx(gpu / memory.MB, abs=0.01)
        assert (three["host_offloaded"] > 0) == offload
    # Mixed precision under DeepSpeed: the model is cast to bf16, so autocast makes no weight copies.
    assert two["device"]["autocast_weight_copies"] == 0 and whole["autocast_weight_copies"] > 0


def test_each_strategy_shards_what_it_says_and_activations_stay(tiny_model_dir):
    for method, options in (("full", {}), ("lora", LORA)):
        p = meta_params(tiny_model_dir, method, options)
        whole = memory.breakdown(p, MIXED, MICRO, 1, 1)
        one = sharding.per_process(whole, p, MIXED, sharding.Layout())
        assert one["training_total"] == pytest.approx(whole["training_total"], abs=0.01)
        ddp = sharding.per_process(whole, p, MIXED, sharding.Layout("ddp", 4))
        assert ddp["device"]["buffers"] == whole["gradients"]  # DDP's buckets: one more copy of the gradients
        fsdp = sharding.per_process(whole, p, MIXED, sharding.Layout("fsdp", 4))
        d = fsdp["device"]
        assert d["weights"] == pytest.approx(whole["weights"] / 4, abs=0.002)
        assert d["optimizer_state"] == pytest.approx(whole["optimizer_state"] / 4, abs=0.002)
        assert 0 < d["gathered"] <= whole["weights"]
        # Under accumulation the unsharded gradients stay between micro-batches; without resharding, every layer.
        accum = sharding.per_process(whole, p, MIXED, sharding.Layout("fsdp", 4, grad_accum=2))
        assert accum["device"]["gradients"] > d["gradients"]
        kept = sharding.per_process(whole, p, MIXED, sharding.Layout("fsdp", 4, reshard_after_forward=False))
        assert kept["device"]["gathered"] == whole["weights"]
        for shared in (ddp, fsdp, accum, kept):
            assert shared["device"]["activations"] == whole["activations"]
            assert shared["evaluation_total"] == whole["evaluation_total"]
        assert fsdp["training_total"] < ddp["training_total"]
    # Eight layers: the root unit and two layers gathered are less than the whole model.
    deep = meta_params(tiny_model_dir, "full", {}, layers=8)
    whole = memory.breakdown(deep, MIXED, MICRO, 1, 1)
    gathered = sharding.per_process(whole, deep, MIXED, sharding.Layout("fsdp", 4))["device"]["gathered"]
    layer = whole["weights"] * deep.largest_layer / deep.total
    assert gathered == pytest.approx(whole["weights"] - 6 * layer, abs=0.002)
    stages = [sharding.per_process(whole, p, MIXED, sharding.Layout("deepspeed", 4, stage=s)) for s in (1, 2, 3)]
    states = [_states(s) for s in stages]
    assert states[0] > states[1] > states[2]  # each stage partitions one thing more
    assert [s["strategy"] for s in stages] == ["deepspeed ZeRO-1", "deepspeed ZeRO-2", "deepspeed ZeRO-3"]


def test_steps_of_two_processes_are_those_of_one_with_twice_the_batch(recipe_file):
    training = {"max_steps": None, "epochs": 2, "grad_accum": 2, "group_by_length": True, "max_length": 256}
    recipe = load_recipe(recipe_file(training={**training, "batch_size": 4}))
    alone, shared = counts_of(recipe)[3], counts_of(recipe, processes=2)[3]
    double = counts_of(load_recipe(recipe_file(training={**training, "batch_size": 8})))[3]
    assert shared.steps == double.steps < alone.steps
    s, d = shared.summary, double.summary
    assert s["processes"] == 2 and s["train_tokens"] == d["train_tokens"] and s["epochs"] == d["epochs"]
    assert 0 < shared.peak_micro["rows"] <= 4 and s["process_targets"] < d["train_targets"]
    assert shared.timed == (alone.steps, alone.longest_step)  # one process times steps of its own batch
    # Each step's padded tokens are its busiest process's, the micro-batches dealt out as the loop deals them.
    lengths = [shared.objective.length(e) for e in shared.encoded["train"]]
    assert len(set(lengths)) > 3  # examples of many lengths: padding differs between the processes
    batches = MicroBatches(len(lengths), 8, recipe.seed, 2, lengths)
    for step in range(shared.steps):
        padded = [sum(_padded(shard(batches.indices(m), World(rank, 2))[0], lengths) for m in (2 * step, 2 * step + 1))
                  for rank in (0, 1)]
        assert shared.step_tokens[step] == max(padded)
    assert s["train_padded_tokens"] == sum(shared.step_tokens) < d["train_padded_tokens"]


def test_validation_of_two_processes_is_the_first_process_share_of_the_batches(recipe_file):
    recipe = load_recipe(recipe_file(training={"max_steps": 4, "eval_every": 2, "batch_size": 2}))
    task = tasks.task_for(recipe)
    alone, shared = (plan.workloads(recipe, task, counts_of(recipe, processes=n)[3])["validation"] for n in (1, 2))
    counts = counts_of(recipe, processes=2)[3]
    examples = counts.encoded["validation"]
    mine = [e for i, b in enumerate(range(0, len(examples), 2)) if i % 2 == 0 for e in examples[b:b + 2]]
    assert len(examples) > 4 and len(mine) < len(examples)
    assert shared["output_positions"] == 2 * sum(counts.objective.units(e) for e in mine)  # 2 validations
    assert shared["tokens"] < alone["tokens"] and "the first of 2 processes' shares" in shared["note"]


def test_the_reference_pass_of_two_processes_is_the_first_process_share(recipe_file, tmp_path):
    from conftest import write_jsonl

    rows = [{"prompt": f"how was the movie {i}?", "chosen": "great " * (1 + i % 7), "rejected": "bad " * (1 + i % 5)}
            for i in range(30)]
    recipe = load_recipe(recipe_file(task={"type": "preference", "labels": None, "template": None},
                                     data={"train": str(write_jsonl(tmp_path / "pairs.jsonl", rows)), "fields": {},
                                           "split": {"validation": 0.2, "test": 0.2, "stratify": False}},
                                     method={"name": "full", "peft": {}}, eval={"batch_size": 2}))
    task = tasks.task_for(recipe)
    one, two = (plan.workloads(recipe, task, counts_of(recipe, processes=n)[3])["reference_pass"] for n in (1, 2))
    assert 0 < two["tokens"] < one["tokens"] and two["note"] == "the first of 2 processes' shares"


def test_every_process_validates_on_its_own_batches_as_often_as_the_others():
    batches = [[i] for i in range(5)]
    shares = [shared_batches(batches, World(rank, 2)) for rank in (0, 1)]
    assert shares[0] == [([0], True), ([2], True), ([4], True)]
    assert shares[1] == [([1], True), ([3], True), ([0], False)]  # the stand-in keeps the forwards in step
    counted = sorted(b[0] for share in shares for b, counted in share if counted)
    assert counted == list(range(5))
    assert shared_batches([], World(1, 2)) == []


def _padded(idx: list[int], lengths: list[int]) -> int:
    return max((lengths[i] for i in idx), default=0) * len(idx)


def test_offloading_is_estimated_for_named_gpus_on_a_machine_without_one(recipe_file):
    """A run that offloads to CPU memory needs a GPU to offload from: this machine may have none, the named
    hardware does (``--hardware``), so the estimate is for that run."""
    path = recipe_file(method={"name": "full", "peft": {}}, training={"max_steps": 2, "batch_size": 4})
    offload = ["--set", "training.distributed.strategy=deepspeed", "--set", "training.distributed.deepspeed.stage=3",
               "--set", "training.distributed.deepspeed.offload_optimizer=true"]
    r = _estimate(path, "--processes", "2", "--hardware", "a100-80gb", *offload)
    p = r["memory"]["per_process"]
    assert p["strategy"] == "deepspeed ZeRO-3, optimizer offloaded" and p["host_offloaded"] > 0
    assert p["device"]["optimizer_state"] == 0
    assert r["hardware"]["memory"]["per_process"]["strategy"] == p["strategy"]


def test_when_one_process_cannot_hold_it_sharding_is_suggested(tiny_model_dir, recipe_file):
    full = meta_params(tiny_model_dir, "full", {})
    recipe = load_recipe(recipe_file(method={"name": "full", "peft": {}}, training={"batch_size": 8}))
    layout = sharding.Layout("ddp", 4)
    need = sharding.per_process(memory.breakdown(full, MIXED, MICRO, 1, 1), full, MIXED, layout)["training_total"]
    found = advice.suggestions(full, MIXED, MICRO, recipe.training, registry.get("full"),
                               lambda: meta_params(tiny_model_dir, "lora", LORA), True, need, need / 2, layout)
    by_change = {s["change"].split(" (")[0]: s for s in found}
    assert by_change["training.distributed.strategy: fsdp"]["saves_mb"] > 0
    zero3 = by_change["training.distributed.strategy: deepspeed, training.distributed.deepspeed.stage: 3"]
    offloaded = by_change["training.distributed.strategy: deepspeed, stage: 3, offload_optimizer: true"]
    assert offloaded["saves_mb"] > zero3["saves_mb"] > 0
    alone = advice.suggestions(full, MIXED, MICRO, recipe.training, registry.get("full"),
                               lambda: meta_params(tiny_model_dir, "lora", LORA), True, need, need / 2)
    assert not any("distributed" in s["change"] for s in alone)  # one process: nothing to shard over


def _estimate(path, *args) -> dict:
    result = CliRunner().invoke(app, ["estimate", str(path), "--json", "--steps", "1", *args])
    assert result.exit_code == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


RENDEZVOUS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "ACCELERATE_USE_DEEPSPEED")


def test_estimate_with_processes_gives_one_process_share_and_n_devices(recipe_file):
    import os

    before = {k: os.environ.get(k) for k in RENDEZVOUS}
    path = recipe_file(training={"max_steps": None, "epochs": 1, "batch_size": 4})
    alone = _estimate(path)
    zero3 = ["--set", "training.distributed.strategy=deepspeed", "--set", "training.distributed.deepspeed.stage=3"]
    r = _estimate(path, "--processes", "2", "--hardware", "a100-80gb", *zero3)
    assert r["steps"] == -(-alone["steps"] // 2) and r["train_tokens"] == alone["train_tokens"]
    p = r["memory"]["per_process"]
    assert p["strategy"] == "deepspeed ZeRO-3" and p["processes"] == 2
    assert p["device"]["weights"] < r["memory"]["weights"]
    fit = r["fit"]
    assert fit["processes"] == 2 and not fit["measured"]
    assert fit["need_total_mb"] == pytest.approx(2 * fit["need_mb"], abs=0.2)  # both share this machine's RAM
    hw = r["hardware"]
    assert hw["devices"] == 2 and hw["memory"]["per_process"]["processes"] == 2
    assert hw["cost"] == pytest.approx(2 * hw["total_seconds"] / 3600 * hw["assumptions"]["price_per_hour"], abs=1e-4)
    code, text = run_cli("estimate", path, "--processes", "2", "--steps", "1", "--quiet", *zero3)
    assert code == 0, text
    for part in ("x 2 processes", "per process (deepspeed ZeRO-3, 2 processes", "2 processes x",
                 "with 2 processes, each on a device like this one"):
        assert part in text
    # The timed steps ran DeepSpeed in this process, with a rendezvous of its own: none of it stays in the
    # environment, where processes started later would read it (and try this process's port).
    assert {k: os.environ.get(k) for k in RENDEZVOUS} == before
