"""``lmtune estimate``: exact token counts and steps, a memory breakdown that adds up and moves the right way,
real timed steps, the projection onto named hardware, and bad input stopped before anything slow."""

from __future__ import annotations

import json
import math

import pytest
from conftest import run_cli
from estimate_cases import LORA, MICRO, counts_of, meta_params
from typer.testing import CliRunner

from lmtune.cli import app
from lmtune.data.encode import Encoder
from lmtune.data.templates import render
from lmtune.estimate import advice, memory
from lmtune.estimate.run import estimate
from lmtune.methods import registry
from lmtune.recipe import load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_token_counts_equal_an_independent_count_of_the_prepared_splits(recipe_file):
    recipe = load_recipe(recipe_file(training={"max_length": 24}))
    prepared, template, tokenizer, counts = counts_of(recipe)
    encoder = Encoder(tokenizer, 24, recipe.task.chat_template)
    encoded = {name: [encoder.encode(*_rendered(template, ex, recipe)) for ex in prepared.splits[name]]
               for name in ("train", "validation")}
    s = counts.summary
    assert s["examples"]["train"] == len(prepared.splits["train"]) == 36
    assert s["train_tokens_per_epoch"] == sum(len(e.input_ids) for e in encoded["train"])
    assert s["train_targets_per_epoch"] == sum(e.n_targets for e in encoded["train"])
    assert s["validation_tokens"] == sum(len(e.input_ids) for e in encoded["validation"])
    assert s["truncated"]["train"] == sum(e.truncated for e in encoded["train"]) > 0
    assert s["target_unit"] == "target tokens"
    # Test prompts are counted whole, as the evaluation reads them (not cut to max_length).
    whole = [len(encoder.prompt_ids(render(template, ex, recipe.task.labels).messages))
             for ex in prepared.splits["test"]]
    assert counts.test_prompt_lengths == whole and max(whole) > 24


def _rendered(template, example, recipe):
    rendered = render(template, example, recipe.task.labels)
    return rendered.messages, rendered.completion


@pytest.mark.parametrize(("training", "steps"), [
    ({"max_steps": 5, "batch_size": 4, "grad_accum": 1}, 5),
    ({"max_steps": None, "epochs": 2, "batch_size": 4, "grad_accum": 2}, math.ceil(math.ceil(36 / 4) / 2 * 2)),
    ({"max_steps": None, "epochs": 1, "batch_size": 5, "grad_accum": 1}, math.ceil(36 / 5)),
])
def test_steps_follow_batch_size_accumulation_and_max_steps(recipe_file, training, steps):
    _, _, _, counts = counts_of(load_recipe(recipe_file(training=training)))
    s = counts.summary
    assert counts.steps == s["steps"] == steps
    assert len(counts.step_tokens) == steps
    micro_batches = math.ceil(36 / training["batch_size"])
    assert s["epochs"] == round(steps * training["grad_accum"] / micro_batches, 3)
    # The longest step is the one with the most padded tokens, and the largest micro-batch is in the run.
    assert counts.step_tokens[counts.longest_step] == max(counts.step_tokens)
    assert 0 < counts.peak_micro["rows"] <= training["batch_size"]


def test_train_tokens_and_steps_are_what_the_run_then_records(recipe_file, tmp_path):
    path = recipe_file(training={"max_steps": None, "epochs": 1, "batch_size": 4, "grad_accum": 2, "eval_every": None},
                       eval={"systems": ["finetuned"]})
    estimated = _json(path, "--steps", "1")
    assert run_cli("train", path, "--out", tmp_path / "run", "--quiet")[0] == 0
    recorded = json.loads((tmp_path / "run" / "eval.json").read_text())["training"]
    assert estimated["train_tokens"] == recorded["train_tokens"]
    assert estimated["steps"] == recorded["train_steps"] == 5


def test_memory_breakdown_adds_up_and_scales(tiny_model_dir):
    full, lora = meta_params(tiny_model_dir, "full", {}), meta_params(tiny_model_dir, "lora", LORA)
    assert full.trainable == full.total > lora.trainable > 0
    assert lora.total - lora.trainable == full.total  # LoRA adds its adapters to the same frozen model
    setup = memory.Setup(weights="fp32", trainable="fp32", compute="bf16", checkpointing=False)
    b = memory.breakdown(full, setup, MICRO, 4, 100)
    assert b["weights"] == pytest.approx(sum(b["weights_by_dtype"].values()), abs=0.002)
    assert b["gradients"] == pytest.approx(full.trainable * 4 / memory.MB, abs=0.001)
    assert b["optimizer_state"] == pytest.approx(2 * b["gradients"], abs=0.002)  # AdamW: two fp32 moments
    parts = ("weights", "gradients", "optimizer_state", "autocast_weight_copies", "activations")
    assert b["training_total"] == pytest.approx(sum(b[k] for k in parts), abs=0.005)
    assert b["activations_checkpointed"] < b["activations"]
    on = memory.breakdown(full, memory.Setup("fp32", "fp32", "bf16", checkpointing=True), MICRO, 4, 100)
    assert on["training_total"] < b["training_total"] and on["activations_used"] == "checkpointed"
    small = memory.breakdown(lora, memory.Setup("fp32", "fp32", "bf16", False), MICRO, 4, 100)
    assert small["gradients"] < b["gradients"] and small["optimizer_state"] < b["optimizer_state"]
    # Twice the rows, about twice the activations; a bf16 base halves the frozen weights.
    plain, checkpointed = memory.activations(full, setup, MICRO)
    double = memory.activations(full, setup, {**MICRO, "rows": 16, "targets": 32})
    assert double == pytest.approx((2 * plain, 2 * checkpointed), rel=1e-6)
    half = memory.breakdown(lora, memory.Setup("bf16", "fp32", "bf16", False), MICRO, 4, 100)
    frozen = lora.total - lora.trainable
    assert half["weights_by_dtype"]["bf16"] == pytest.approx(frozen * 2 / memory.MB, abs=0.001)
    assert small["weights_by_dtype"]["fp32"] == pytest.approx(lora.total * 4 / memory.MB, abs=0.001)
    assert b["eval_kv_cache"] > 0


def test_what_to_change_when_it_does_not_fit(tiny_model_dir, recipe_file):
    full = meta_params(tiny_model_dir, "full", {})
    recipe = load_recipe(recipe_file(method={"name": "full", "peft": {}}, training={"batch_size": 8}))
    setup = memory.Setup(weights="fp32", trainable="fp32", compute="bf16", checkpointing=False)
    need = memory.breakdown(full, setup, MICRO, 1, 1)["training_total"]
    found = advice.suggestions(full, setup, MICRO, recipe.training, registry.get("full"),
                               lambda: meta_params(tiny_model_dir, "lora", LORA), True, need, need / 2)
    changes = " | ".join(s["change"] for s in found)
    for expected in ("training.batch_size", "gradient_checkpointing", "method.name: lora", "method.name: qlora"):
        assert expected in changes
    assert all(s["saves_mb"] > 0 and s["need_mb"] == pytest.approx(need - s["saves_mb"], abs=0.002) for s in found)


def test_estimate_times_real_steps_and_projects_onto_named_hardware(recipe_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(recipe_file(training={"max_steps": 6}))
    r = estimate(recipe, "a100-80gb", price_per_hour=2.0, steps=2, quiet=True)
    t = r["time"]
    assert t["measured"] and len(t["timed_steps"]) == 2
    assert t["timed_steps"][0]["step"] == r["tokens"]["longest_step"]  # the peak is seen with the optimizer state
    assert r["seconds_per_step"] > 0 and r["total_seconds"] > r["seconds_per_step"] * r["steps"]
    assert r["peak_memory_mb"] > 0 and r["memory_kind"] in ("rss", "cuda")
    assert r["memory"]["calibration"]["ratio"] > 0
    hw = r["hardware"]
    assert hw["projection"] is True and hw["hardware"] == "a100-80gb" and hw["fits"] is True
    assert hw["assumptions"]["price_per_hour"] == 2.0 and hw["flops"]["training"] > 0
    assert hw["cost"] == pytest.approx(hw["total_seconds"] / 3600 * 2.0, abs=1e-4)
    assert r["money"]["training_cost"] == pytest.approx(r["train_tokens"] / 1000 * 0.003, abs=1e-6)
    assert not (tmp_path / "runs").exists()  # nothing is written


def _json(path, *args) -> dict:
    """``lmtune estimate PATH --json``'s stdout (progress goes to stderr), parsed."""
    result = CliRunner().invoke(app, ["estimate", str(path), "--json", *args])
    assert result.exit_code == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_json_has_the_promised_keys(recipe_file):
    body = _json(recipe_file(), "--steps", "1")
    for key in ("train_tokens", "steps", "seconds_per_step", "total_seconds", "peak_memory_mb", "memory", "tokens",
                "time", "money", "fit", "hardware"):
        assert key in body
    assert body["steps"] == 4 and body["hardware"] is None
    for key in ("weights_by_dtype", "trainable_parameters", "gradients", "optimizer_state", "activations",
                "activations_checkpointed", "eval_kv_cache"):
        assert key in body["memory"]


def test_console_text_names_every_part(recipe_file):
    code, output = run_cli("estimate", recipe_file(), "--hardware", "l4-24gb", "--steps", "1", "--quiet")
    assert code == 0, output
    for part in ("tokens", "steps", "memory", "calibration here", "time", "money", "fit", "PROJECTION"):
        assert part in output


def test_unknown_hardware_lists_the_known_names(recipe_file):
    code, output = run_cli("estimate", recipe_file(), "--hardware", "a100-80")
    assert code == 2
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --hardware: unknown hardware 'a100-80'")
    assert "did you mean 'a100-80gb'" in lines[0]
    for name in ("a10-24gb", "l4-24gb", "a100-80gb", "h100-80gb", "rtx4090-24gb"):
        assert name in lines[0]


def test_bad_recipe_fails_before_any_model_loads(recipe_file, tmp_path):
    # The model does not exist either: the recipe's own problem is what is reported, so nothing was loaded.
    path = recipe_file(model=str(tmp_path / "no-such-model"), training={"batch_size": 0})
    code, output = run_cli("estimate", path)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("error: training.batch_size:")


GOOD = ["the movie was great and i loved it", "this drug helped my pain a lot"]
BAD = ["the movie was terrible and boring", "this drug gave me awful side effects"]


def _shape(name: str, tmp_path, recipe_file):
    """A recipe of each other task shape and method: head, regression, preference, generation, packing, ..."""
    from conftest import write_jsonl
    from tiny import save_tiny_encoder

    if name == "encoder-head-full":
        return recipe_file(model=str(save_tiny_encoder(tmp_path / "bert")), method={"name": "full", "peft": {}},
                           eval={"systems": ["majority", "finetuned"]})
    if name == "preference":
        rows = [{"prompt": f"how was the movie {i}?", "chosen": GOOD[i % 2], "rejected": BAD[i % 2]} for i in range(30)]
        return recipe_file(task={"type": "preference", "labels": None, "template": None},
                           data={"train": str(write_jsonl(tmp_path / "pairs.jsonl", rows)), "fields": {},
                                 "split": {"validation": 0.2, "test": 0.2, "stratify": False}},
                           eval={"systems": ["zero_shot", "finetuned"]})
    if name == "generation":
        rows = [{"prompt": GOOD[i % 2] + f" #{i}", "completion": "great"} for i in range(30)]
        return recipe_file(task={"type": "generation", "labels": None, "template": "completion"},
                           data={"train": str(write_jsonl(tmp_path / "gen.jsonl", rows)), "fields": {},
                                 "split": {"validation": 0.2, "test": 0.2, "stratify": False}},
                           eval={"systems": ["zero_shot", "finetuned"], "max_new_tokens": 4})
    options = {"ia3-packing": ({"name": "ia3", "peft": {}}, {"packing": True}),
               "adapter-checkpointing": ({"name": "adapter", "peft": {}}, {"gradient_checkpointing": True}),
               "prompt-tuning": ({"name": "prompt_tuning", "peft": {"num_virtual_tokens": 4}}, {})}[name]
    return recipe_file(method=options[0], training=options[1])


@pytest.mark.parametrize("name", ["encoder-head-full", "preference", "generation", "ia3-packing",
                                  "adapter-checkpointing", "prompt-tuning"])
def test_every_task_shape_and_method_is_estimated(name, tmp_path, recipe_file):
    body = _json(_shape(name, tmp_path, recipe_file), "--steps", "1", "--hardware", "h100-80gb")
    assert body["steps"] == 4 and body["train_tokens"] > 0
    assert body["seconds_per_step"] > 0 and body["peak_memory_mb"] > 0
    assert 0 < body["memory"]["trainable_parameters"] <= body["memory"]["total_parameters"]
    assert body["hardware"]["total_seconds"] > 0
    if name == "preference":
        assert body["tokens"]["target_unit"] == "pairs" and "reference_pass" in body["workloads"]
    if name == "generation":
        assert body["workloads"]["evaluation"]["decode_steps"] > 0


def test_timed_steps_train_as_the_loop_does_so_checkpointing_applies(tok, tmp_path):
    """transformers checkpoints activations only in training mode; a freshly loaded model is in eval mode."""
    from tiny import method_model, train_examples, train_settings

    from lmtune.estimate import timing
    from lmtune.train import loop

    model = method_model(tok).eval()
    run = loop.setup(model, train_examples(tok, 8), [], train_settings(gradient_checkpointing=True), tmp_path,
                     tok.pad_token_id, quiet=True)
    try:
        timing._step(run, 0)
        assert run.model.training and run.model.base_model.model.model.gradient_checkpointing
    finally:
        loop.cleanup(run)
