"""Self-distillation (``lmtune.train.distill``, ``training.distill``): the term is the KL of the softened base and
fine-tuned distributions, zero until the adapter moves, drawn deterministically so a resumed run continues it
exactly, logged as ``distill_kl``; and what it is for: the fine-tuned model stays closer to the base on general
text than without it."""

import copy
import json
import random

import pytest
import torch
from conftest import refused_train, run_cli, write_jsonl
from scipy.special import softmax
from scipy.stats import entropy
from tiny import (
    SENTENCES,
    Killed,
    build_model,
    build_tokenizer,
    fail_in_step,
    lora_moved,
    method_model,
    train_examples,
    train_settings,
)

from lmtune.data.encode import IGNORE, Encoder, pack_blocks
from lmtune.methods import registry
from lmtune.train import distill, loop
from lmtune.train.batches import collate
from lmtune.train.objectives import TokenObjective, evaluate_loss
from lmtune.train.track import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def _documents(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(SENTENCES) for _ in range(4)) for _ in range(n)]


def _blocks(tok, n: int = 12, seed: int = 0, size: int = 16):
    return pack_blocks(Encoder(tok, 64), [([], d) for d in _documents(n, seed)], size)


def _objective(tok, blocks, start_step=0, **kw):
    options = {"weight": 1.0, "temperature": 2.0, "batch_size": 2, "grad_accum": 1, "seed": 0, **kw}
    return distill.DistillObjective(TokenObjective(), blocks, tok.pad_token_id, start_step=start_step, **options)


def _grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_token_kl_is_the_kl_of_the_softened_distributions(temperature):
    gen = torch.Generator().manual_seed(0)
    policy, base = torch.randn(5, 11, generator=gen) * 3, torch.randn(5, 11, generator=gen) * 3
    got = distill.token_kl(policy, base, temperature)
    # scipy's entropy(p, q) is KL(p || q): the base is p, the distribution the policy is pulled towards.
    expected = entropy(softmax(base.numpy() / temperature, axis=-1), softmax(policy.numpy() / temperature, axis=-1),
                       axis=-1)
    assert got.numpy() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert distill.token_kl(base, base, temperature).abs().max() < 1e-6


def test_the_term_is_the_kl_of_the_base_and_the_adapted_model(tok):
    model = lora_moved(method_model(tok)).eval()
    blocks = _blocks(tok)
    batch = collate(blocks[:3], tok.pad_token_id)
    with torch.no_grad():
        policy = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        with model.disable_adapter():
            base = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    where = batch["labels"][:, 1:] != IGNORE
    p_base = softmax(base[:, :-1][where].numpy() / 2.0, axis=-1)
    p_policy = softmax(policy[:, :-1][where].numpy() / 2.0, axis=-1)
    expected = entropy(p_base, p_policy, axis=-1).sum()
    assert expected > 1e-3  # the moved adapter changes the predictions
    assert distill.kl_sum(model, batch, 2.0).item() == pytest.approx(expected, rel=1e-4)


def test_the_objective_adds_the_term_to_the_gradient_and_keeps_the_task_loss_as_its_value(tok):
    model, blocks = lora_moved(method_model(tok)).train(), _blocks(tok)
    examples = train_examples(tok, 4)
    objective = _objective(tok, blocks, weight=0.7, temperature=2.0)
    task = TokenObjective()
    batch = objective.collate(examples, tok.pad_token_id)
    value = objective.loss_sum(model, batch)
    value.backward()
    got = _grads(model)
    plain = task.loss_sum(model, task.collate(examples, tok.pad_token_id))
    assert value.item() == plain.item()  # the logged loss is the task's: comparable with validation
    drawn = collate([blocks[i] for i in distill.BlockOrder(len(blocks), 2, 0).indices(0)], tok.pad_token_id)
    tokens = int((drawn["labels"][:, 1:] != IGNORE).sum())
    units = sum(e.n_targets for e in examples)
    (plain + 0.7 * 2.0 ** 2 * distill.kl_sum(model, drawn, 2.0) / tokens * units).backward()
    expected = _grads(model)
    assert got.keys() == expected.keys() and got
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7)
    # Validation (no gradient) sees the task's loss alone and draws no block.
    assert evaluate_loss(model, examples, 4, tok.pad_token_id, "cpu", objective=objective) == pytest.approx(
        evaluate_loss(model, examples, 4, tok.pad_token_id, "cpu"))
    assert objective.cursor == 1


def test_the_term_is_zero_until_the_adapter_moves(tok):
    model, blocks = method_model(tok).train(), _blocks(tok)  # LoRA's B starts at zero: policy == base
    batch = collate(blocks[:4], tok.pad_token_id)
    assert distill.kl_sum(model, batch, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    examples, objective, task = train_examples(tok, 4), _objective(tok, blocks, weight=5.0), TokenObjective()
    objective.loss_sum(model, objective.collate(examples, tok.pad_token_id)).backward()
    with_term = _grads(model)
    task.loss_sum(model, task.collate(examples, tok.pad_token_id)).backward()
    without = _grads(model)
    for name in without:
        torch.testing.assert_close(with_term[name], without[name], rtol=1e-5, atol=1e-7)


def test_a_model_without_an_adapter_is_refused(tok):
    from lmtune.errors import UserError

    blocks = _blocks(tok)
    with pytest.raises(UserError) as err:
        distill.kl_sum(build_model(len(tok)), collate(blocks[:2], tok.pad_token_id), 1.0)
    assert err.value.source == "training.distill" and "adapter" in err.value.message


def test_the_block_order_depends_only_on_the_micro_batch():
    order = distill.BlockOrder(7, 3, seed=5)
    drawn = [i for c in range(7) for i in order.indices(c)]  # 21 positions: three passes over the 7 blocks
    assert all(sorted(drawn[p:p + 7]) == list(range(7)) for p in (0, 7, 14))
    assert drawn[:7] != drawn[7:14]  # a fresh shuffle per pass
    assert [distill.BlockOrder(7, 3, seed=5).indices(c) for c in (4, 2)] == [order.indices(4), order.indices(2)]
    other = distill.BlockOrder(7, 3, seed=6)
    assert [i for c in range(7) for i in other.indices(c)] != drawn
    # Three processes of 2 blocks each draw together the 6 blocks one process of 6 would draw.
    for cursor in range(5):
        shared = sorted(i for rank in range(3) for i in distill.BlockOrder(10, 2, 0).indices(cursor, rank, 3))
        assert shared == sorted(distill.BlockOrder(10, 6, 0).indices(cursor))


def test_a_resumed_run_draws_the_same_blocks_and_logs_what_the_uninterrupted_run_logs(tok, tmp_path, monkeypatch):
    data, val, blocks = train_examples(tok, 16), train_examples(tok, 4), _blocks(tok, n=20)
    settings = train_settings(max_steps=6, save_every=2, log_every=1, eval_every=2, grad_accum=2, batch_size=2)
    pad = tok.pad_token_id
    loop.train(method_model(tok), data, val, settings, tmp_path / "a", pad, quiet=True,
               objective=_objective(tok, blocks, grad_accum=2))
    for name, start in (("b", None), ("c", 0)):  # c: a resume that forgot where the distill blocks were
        restore = fail_in_step(monkeypatch, 5)
        with pytest.raises(Killed):
            loop.train(method_model(tok), data, val, settings, tmp_path / name, pad, quiet=True,
                       objective=_objective(tok, blocks, grad_accum=2))
        restore()
        assert distill.resumed_step(tmp_path / name / "checkpoints") == 4
        step = distill.resumed_step(tmp_path / name / "checkpoints") if start is None else start
        loop.train(method_model(tok, seed=99), data, val, settings, tmp_path / name, pad, resume=True, quiet=True,
                   objective=_objective(tok, blocks, start_step=step, grad_accum=2))
    expected = (tmp_path / "a" / "metrics.jsonl").read_bytes()
    assert (tmp_path / "b" / "metrics.jsonl").read_bytes() == expected
    logged = {n: {m["step"]: m["distill_kl"] for m in read_metrics(tmp_path / n / "metrics.jsonl") if "distill_kl" in m}
              for n in "abc"}
    assert sorted(logged["a"]) == [1, 2, 3, 4, 5, 6] and logged["a"][1] == 0.0 < logged["a"][6]
    assert logged["c"][5] != logged["a"][5]  # the test can tell: other blocks, another KL
    assert distill.resumed_step(None) == 0 and distill.resumed_step(tmp_path / "none") == 0


def _kl_to_base(model, blocks, pad: int) -> float:
    """Mean KL per token between the base (adapter off) and ``model`` on ``blocks``, at temperature 1."""
    batch = collate(blocks, pad)
    with torch.no_grad():
        total = distill.kl_sum(model.eval(), batch, 1.0)
    return total.item() / int((batch["labels"][:, 1:] != IGNORE).sum())


def test_distillation_keeps_general_text_closer_to_the_base_model(tmp_path):
    """A model pre-trained on general text learns a narrow task with LoRA, with and without distillation on
    that text; measured on general text neither run saw."""
    tok = build_tokenizer()
    enc = Encoder(tok, 64)
    general, held_out = _blocks(tok, n=40, seed=0), _blocks(tok, n=20, seed=1)
    base = build_model(len(tok), seed=0)
    loop.train(base, general, [], train_settings(max_steps=100, learning_rate=2e-2, batch_size=8, log_every=50),
               tmp_path / "pre", tok.pad_token_id, quiet=True)
    rng = random.Random(0)
    task = [enc.encode([{"role": "user", "content": rng.choice(SENTENCES)}], "neutral neutral neutral")
            for _ in range(32)]
    settings = train_settings(max_steps=40, batch_size=8, learning_rate=3e-2, log_every=10)
    drift, general_loss, task_loss = {}, {}, {}
    for name, objective in (("none", None), ("distill", _objective(tok, general, batch_size=8))):
        torch.manual_seed(0)
        model = registry.get("lora").apply(copy.deepcopy(base), {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}, {})
        before = evaluate_loss(model, task, 8, tok.pad_token_id, "cpu"), evaluate_loss(
            model, held_out, 8, tok.pad_token_id, "cpu")
        loop.train(model, task, [], settings, tmp_path / name, tok.pad_token_id, quiet=True, objective=objective)
        drift[name] = _kl_to_base(model, held_out, tok.pad_token_id)
        task_loss[name] = evaluate_loss(model, task, 8, tok.pad_token_id, "cpu")
        general_loss[name] = evaluate_loss(model, held_out, 8, tok.pad_token_id, "cpu")
    print({"kl_to_base": drift, "general_loss": general_loss, "task_loss": task_loss, "before": before})
    assert drift["distill"] < drift["none"] / 10
    assert general_loss["none"] > 3 * before[1] and general_loss["distill"] < 1.5 * before[1]
    # The task is learnt as well as without it.
    assert task_loss["distill"] < before[0] / 2 and task_loss["distill"] < 1.2 * task_loss["none"]


def test_a_tiny_run_with_distill_logs_distill_kl_and_trains(recipe_file, tmp_path):
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": d} for d in _documents(20, seed=3)])
    path = recipe_file(training={"max_steps": 6, "distill": {"data": str(general), "batch_size": 2}},
                       eval={"systems": ["finetuned"]})
    code, output = run_cli("train", path, "--out", tmp_path / "run", "--quiet")
    assert code == 0, output
    lines = read_metrics(tmp_path / "run" / "metrics.jsonl")
    train = {m["step"]: m for m in lines if m["split"] == "train"}
    assert sorted(train) == [1, 2, 3, 4, 5, 6]
    # Step 1 scored its blocks before the first update: the adapter was still the base. Then it moves.
    assert train[1]["distill_kl"] == 0.0 < train[6]["distill_kl"]
    assert train[6]["loss"] < train[1]["loss"]
    assert all("distill_kl" not in m for m in lines if m["split"] == "validation")
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["training"]["train_steps"] == 6


@pytest.mark.parametrize("distill_options, method, expected", [
    ({"weight": 0}, None, "training.distill.weight"),
    ({"temperature": -1.0}, None, "training.distill.temperature"),
    ({}, {"name": "full"}, "error: training.distill: needs an adapter method"),
    ({}, {"name": "adapter"}, "error: training.distill: needs an adapter method"),
])
def test_bad_distill_settings_are_refused_before_the_model_loads(recipe_file, tmp_path, no_model_load,
                                                                 distill_options, method, expected):
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": "general text"}])
    sections = {"training": {"distill": {"data": str(general), **distill_options}}}
    if method is not None:
        sections["method"] = method
    line = refused_train(recipe_file(**sections), tmp_path / "run")
    assert line.startswith("error: ") and expected in line


def test_bad_distill_data_is_refused_with_its_file_and_line_before_the_model_loads(recipe_file, tmp_path,
                                                                                  no_model_load):
    missing = tmp_path / "nope.jsonl"
    line = refused_train(recipe_file(training={"distill": {"data": str(missing)}}), tmp_path / "run")
    assert str(missing) in line
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine"}, {"prompt": "x"}])
    line = refused_train(recipe_file(training={"distill": {"data": str(bad)}}), tmp_path / "run")
    assert f"{bad}:2" in line and "training.distill" in line


def test_distill_on_a_head_task_is_refused_before_the_model_loads(recipe_file, tmp_path, no_model_load):
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": "general text"}])
    path = recipe_file(task={"head": True}, training={"distill": {"data": str(general)}},
                       eval={"systems": ["majority", "finetuned"]})
    line = refused_train(path, tmp_path / "run")
    assert "training.distill" in line and "head" in line


def test_the_shipped_distill_recipe_is_the_replay_recipe_with_lora_and_distill_instead_of_replay():
    """The forgetting comparison keeps everything else equal: data, training, probes, and the replay data as the
    distill data."""
    from lmtune.recipe import load_recipe

    distilled = load_recipe("recipes/drug-reviews-distill.yaml").model_dump()
    replayed = load_recipe("recipes/drug-reviews-replay.yaml").model_dump()
    assert distilled["method"]["name"] == "lora" and replayed["method"]["name"] == "full"
    assert distilled["training"]["distill"]["data"] == replayed["training"]["replay"]["data"]
    assert {k for k in distilled if distilled[k] != replayed[k]} == {"name", "method", "training"}
    training = {k for k in distilled["training"] if distilled["training"][k] != replayed["training"][k]}
    assert training == {"distill", "replay"}


def test_two_processes_distil_on_the_blocks_of_one_and_log_its_kl(tmp_path, tiny_model_dir):
    """2 processes x (batch 4, distill batch 2) against 1 x (8, 4): DDP takes the extra forward pass, the two share
    one draw of blocks, and ``distill_kl`` is summed over both. Each process averages the KL over its own blocks'
    tokens, so the two runs agree closely, not to the bit."""
    from multiproc import LMTUNE, recipe_maker, train

    general = write_jsonl(tmp_path / "general.jsonl", [{"text": d} for d in _documents(20, seed=3)])
    make = recipe_maker(tmp_path, tiny_model_dir)
    one = make("one", training={"batch_size": 8, "distill": {"data": str(general), "batch_size": 4}})
    two = make("two", training={"batch_size": 4, "distill": {"data": str(general), "batch_size": 2}})
    train(LMTUNE, one, tmp_path / "run-one")
    train(LMTUNE, two, tmp_path / "run-two", "--processes", "2")
    logged = {name: {m["step"]: m for m in read_metrics(tmp_path / name / "metrics.jsonl") if m["split"] == "train"}
              for name in ("run-one", "run-two")}
    assert sorted(logged["run-one"]) == sorted(logged["run-two"]) == [1, 2, 3, 4]
    for step, line in logged["run-one"].items():
        assert logged["run-two"][step]["loss"] == pytest.approx(line["loss"], abs=1e-4)
        assert logged["run-two"][step]["distill_kl"] == pytest.approx(line["distill_kl"], rel=0.05, abs=1e-9)
    assert logged["run-one"][4]["distill_kl"] > 0
