"""The preference losses beside DPO (IPO, SimPO, ORPO, KTO): each equals its paper's formula on planted
log-probs, gradients reach the policy (not KTO's reference point), the reference-free losses run no reference,
every loss trains end to end, and bad recipes or data stop with one line and exit code 2."""

import json
import math

import pytest
import torch
from conftest import run_cli, write_jsonl
from tiny import build_model

from lmtune.data.encode import Encoder
from lmtune.distributed import World
from lmtune.errors import UserError
from lmtune.methods import registry
from lmtune.recipe import recipe_from_dict
from lmtune.recipe_preference import PREFERENCE_LOSSES
from lmtune.train import kto
from lmtune.train.preference import PreferenceObjective, encode_pair
from lmtune.train.preference_losses import LOSSES, LossSpec, kto_loss, kto_reference_point, pair_terms

pytestmark = pytest.mark.usefixtures("one_thread")

GOOD = ["the movie was great and i loved it", "this drug helped my pain a lot"]
BAD = ["the movie was terrible and boring", "this drug gave me awful side effects"]

# Planted summed log-probs of 3 pairs (chosen rows, then rejected rows) and their completion lengths.
POLICY = [-4.0, -9.0, -2.5, -6.0, -7.5, -3.0]
REFERENCE = [-5.0, -8.0, -2.0, -5.5, -8.5, -4.0]
LENGTHS = [4.0, 6.0, 2.0, 3.0, 5.0, 3.0]


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _expected(loss: str, beta: float, gamma: float) -> list[float]:
    """Each paper's per-pair loss, written out in plain float math from the planted values."""
    out = []
    for i in range(3):
        pc, pr, rc, rr = POLICY[i], POLICY[i + 3], REFERENCE[i], REFERENCE[i + 3]
        nc, nr = LENGTHS[i], LENGTHS[i + 3]
        if loss == "sigmoid":  # DPO: summed log-probs
            out.append(-math.log(_sig(beta * ((pc - rc) - (pr - rr)))))
        elif loss == "ipo":  # IPO on TRL's per-token averages, tau = beta
            h = (pc / nc - rc / nc) - (pr / nr - rr / nr)
            out.append((h - 1 / (2 * beta)) ** 2)
        elif loss == "simpo":
            out.append(-math.log(_sig(beta * (pc / nc - pr / nr) - gamma)))
        else:  # ORPO: NLL + lambda * -log sigmoid(log(odds_w / odds_l)), odds = P / (1 - P), P = exp(avg)
            p_w, p_l = math.exp(pc / nc), math.exp(pr / nr)
            ratio = math.log((p_w / (1 - p_w)) / (p_l / (1 - p_l)))
            out.append(-pc / nc + beta * -math.log(_sig(ratio)))
    return out


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "simpo", "orpo"])
def test_each_pair_loss_equals_its_paper_formula_and_its_gradient_reaches_the_policy(loss):
    spec = LossSpec(loss, beta=0.3, simpo_gamma=0.4)
    policy = torch.tensor(POLICY, requires_grad=True)
    reference = torch.tensor(REFERENCE) if spec.needs_reference else None
    terms = pair_terms(spec, policy, reference, torch.tensor(LENGTHS))
    assert terms.losses.tolist() == pytest.approx(_expected(loss, 0.3, 0.4), rel=1e-5)
    terms.losses.sum().backward()
    assert torch.isfinite(policy.grad).all() and (policy.grad != 0).all()
    assert (policy.grad[:3] < 0).all()  # lowering the loss raises every chosen completion's log-prob
    # TRL's rewards: beta * (policy - reference), per-token averages for ipo; beta * average for simpo / orpo.
    scale = torch.tensor(LENGTHS) if spec.averaged else torch.ones(6)
    base = torch.tensor(POLICY) / scale - (torch.tensor(REFERENCE) / scale if spec.needs_reference else 0)
    assert torch.cat([terms.chosen_rewards, terms.rejected_rewards]).tolist() == pytest.approx((0.3 * base).tolist())


def test_orpo_odds_stay_finite_where_a_completion_is_almost_certain():
    terms = pair_terms(LossSpec("orpo"), torch.tensor([-1e-9, -1e-3, -30.0, -2.0], requires_grad=True), None,
                       torch.ones(4))
    assert torch.isfinite(terms.losses).all() and torch.isfinite(terms.extra["log_odds_chosen"]).all()
    # log odds of P = exp(-1e-3), computed in float64: log(P / (1 - P)) = 6.9073...
    expected = math.log(math.exp(-1e-3) / -math.expm1(-1e-3)) - math.log(math.exp(-2.0) / -math.expm1(-2.0))
    assert terms.extra["log_odds_chosen"][1].item() == pytest.approx(expected, rel=1e-4)


def test_kto_loss_equals_the_paper_formula_and_its_reference_point_is_detached():
    spec = LossSpec("kto", beta=0.5, desirable_weight=1.5, undesirable_weight=0.7)
    policy = torch.tensor([-3.0, -6.0, -2.0, -9.0], requires_grad=True)
    reference = torch.tensor([-4.0, -5.0, -2.5, -8.0])
    desirable = torch.tensor([True, False, True, False])
    policy_kl = torch.tensor([-7.0, -6.0, -9.0, -5.0], requires_grad=True)
    reference_kl = torch.tensor([-7.5, -6.5, -8.0, -6.0])
    z0 = kto_reference_point(policy_kl, reference_kl)
    mean_shift = ((-7.0 + 7.5) + (-6.0 + 6.5) + (-9.0 + 8.0) + (-5.0 + 6.0)) / 4
    assert z0.item() == pytest.approx(max(mean_shift, 0.0))
    assert kto_reference_point(policy_kl - 5, reference_kl).item() == 0.0  # clamped at 0, as a KL is
    losses = kto_loss(policy, reference, desirable, z0, spec)
    expected = []
    for p, r, good in zip(policy.tolist(), reference.tolist(), desirable.tolist()):
        v = 1.5 * _sig(0.5 * ((p - r) - z0.item())) if good else 0.7 * _sig(0.5 * (z0.item() - (p - r)))
        expected.append((1.5 if good else 0.7) - v)  # lambda_y - v(x, y)
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)
    losses.sum().backward()
    assert (policy.grad[desirable] < 0).all() and (policy.grad[~desirable] > 0).all()
    assert policy_kl.grad is None  # z0 is a reference point, not a target


def test_the_recipe_and_the_training_code_name_the_same_losses():
    assert PREFERENCE_LOSSES == LOSSES


def _lora(tok):
    return registry.get("lora").apply(build_model(len(tok), seed=0), {"r": 4, "lora_dropout": 0.0}, {})


def _forwards(model) -> list[int]:
    """A list that grows by one per forward pass of the model's decoder layers' first module."""
    calls: list[int] = []
    layer = next(m for name, m in model.named_modules() if name.endswith("layers.0"))
    layer.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def test_simpo_and_orpo_run_no_reference_forward_and_need_no_precomputed_reference(tok):
    enc = Encoder(tok, 64)
    pairs = [encode_pair(enc, [{"role": "user", "content": "how was it"}], GOOD[i], BAD[i]) for i in range(2)]
    model = _lora(tok)
    calls = _forwards(model)
    counted = {}
    for loss in ("sigmoid", "ipo", "simpo", "orpo"):
        objective = PreferenceObjective(loss=LossSpec(loss))
        calls.clear()
        objective.loss_sum(model, objective.collate(pairs, tok.pad_token_id)).backward()
        counted[loss] = len(calls)
    assert counted == {"sigmoid": 2, "ipo": 2, "simpo": 1, "orpo": 1}  # policy, then the adapter-disabled reference
    full = build_model(len(tok), seed=0)  # no adapter, nothing precomputed: only the reference-free losses can train
    batch = PreferenceObjective().collate(pairs, tok.pad_token_id)
    with pytest.raises(UserError):
        PreferenceObjective(loss=LossSpec("sigmoid")).loss_sum(full, batch)
    assert torch.isfinite(PreferenceObjective(loss=LossSpec("orpo")).loss_sum(full, batch))


def test_kto_pairs_each_prompt_with_the_previous_completion_and_costs_half_a_weight_at_initialisation(tok):
    enc = Encoder(tok, 64)
    records = [([{"role": "user", "content": f"review {i}"}], (GOOD + BAD)[i], i < 2) for i in range(4)]
    examples = kto.encode_unpaired(enc, records)
    assert examples[1].kl_sequence.input_ids == enc.encode(records[1][0], records[0][1]).input_ids
    assert examples[0].kl_sequence.input_ids == enc.encode(records[0][0], records[3][1]).input_ids  # wraps round
    spec = LossSpec("kto", beta=0.1, desirable_weight=1.5, undesirable_weight=0.5)
    objective = kto.UnpairedObjective(spec)
    model = _lora(tok)  # LoRA B = 0: policy == reference, every reward and z0 are 0
    total = objective.loss_sum(model, objective.collate(examples, tok.pad_token_id))
    assert total.item() == pytest.approx(0.5 * (2 * 1.5 + 2 * 0.5), rel=1e-5)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
    logged = objective.window_metrics(World())
    assert logged["kl"] == 0.0 and logged["rewards/chosen"] == 0.0 and set(logged) == {"kl", "rewards/chosen",
                                                                                         "rewards/rejected"}
    full = build_model(len(tok), seed=0)  # full fine-tuning: the reference is precomputed, mismatched pairs too
    kto.precompute_reference(full, examples, 3, tok.pad_token_id)
    assert all(e.ref is not None and e.ref_kl is not None for e in examples)
    again = objective.loss_sum(full, objective.collate(examples, tok.pad_token_id))
    assert again.item() == pytest.approx(0.5 * (2 * 1.5 + 2 * 0.5), rel=1e-5)  # the model is its own reference


def _pairs_file(tmp_path, n=24):
    rows = [{"prompt": f"how was the movie {i}?", "chosen": GOOD[i % 2], "rejected": BAD[i % 2]} for i in range(n)]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def _unpaired_file(tmp_path, n=12, kinds=(True, False)):
    rows = [{"prompt": f"how was the movie {i}?", "completion": (GOOD if good else BAD)[i % 2], "label": good}
            for i in range(n) for good in kinds]
    return write_jsonl(tmp_path / "kto.jsonl", rows)


def _preference_recipe(recipe_file, data, loss, **training):
    return recipe_file(task={"type": "preference", "labels": None, "template": None},
                       data={"train": str(data), "fields": {},
                             "split": {"validation": 0.2, "test": 0.25, "stratify": False, "group_by": "prompt"}},
                       training={"max_steps": 4, "learning_rate": 3e-2, "log_every": 2, "preference_loss": loss,
                                 **training},
                       eval={"systems": ["zero_shot", "finetuned"]})


@pytest.mark.parametrize("loss", ["sigmoid", "ipo", "simpo", "orpo", "kto"])
def test_every_loss_trains_end_to_end_and_writes_its_metrics(loss, recipe_file, tmp_path):
    data = _unpaired_file(tmp_path) if loss == "kto" else _pairs_file(tmp_path)
    out = tmp_path / loss
    code, output = run_cli("train", _preference_recipe(recipe_file, data, loss), "--out", out, "--quiet")
    assert code == 0, output
    systems = json.loads((out / "eval.json").read_text())["results"]
    results, base = systems["finetuned"], systems["zero_shot"]
    key = "dpo_loss" if loss == "sigmoid" else f"{loss}_loss"
    assert results[key] < base[key]  # trained: the held-out loss fell from the base model's
    assert results["reward_accuracy"] > base["reward_accuracy"] and results["n"] == base["n"] > 0
    if loss == "kto":
        assert {"desirable_above_reference", "undesirable_below_reference", "kl"} <= set(results)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [line for line in lines if line["split"] == "train"]
    assert train and all("rewards/chosen" in line for line in train)
    assert ("kl" in train[0]) == (loss == "kto") and ("nll_loss" in train[0]) == (loss == "orpo")


def test_full_fine_tuning_runs_the_reference_pass_for_dpo_only_not_for_simpo(recipe_file, tmp_path, monkeypatch):
    from lmtune.train import preference

    passes = []
    real = preference.precompute_reference

    def counted(model, pairs, *args):
        passes.append(len(pairs))
        return real(model, pairs, *args)

    monkeypatch.setattr(preference, "precompute_reference", counted)
    path = _preference_recipe(recipe_file, _pairs_file(tmp_path), {"type": "simpo", "beta": 2.0, "simpo_gamma": 1.0},
                              learning_rate=1e-3, max_steps=2)
    full = ("--set", "method.name=full", "--set", "method.peft={}")
    code, output = run_cli("train", path, "--out", tmp_path / "simpo", "--quiet", *full)
    assert code == 0, output
    assert passes == []  # no reference log-probs computed, and training needed none
    code, output = run_cli("train", path, "--out", tmp_path / "dpo", "--quiet", *full,
                           "--set", "training.preference_loss=sigmoid")
    assert code == 0, output
    assert sum(passes) == 24  # DPO: every pair of every split, once, before training


def _error(code, output) -> str:
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


def test_kto_data_of_one_kind_stops_naming_the_file(recipe_file, tmp_path):
    data = _unpaired_file(tmp_path, kinds=(True,))
    line = _error(*run_cli("train", _preference_recipe(recipe_file, data, "kto"), "--out", tmp_path / "r"))
    assert line.startswith(f"error: {data}: ") and "desirable" in line and "label false" in line


@pytest.mark.parametrize("loss, made, expected", [
    ("hinge", "pairs", "training.preference_loss: unknown preference loss 'hinge'; choose from sigmoid, ipo, simpo, "
                       "orpo, kto"),
    ({"type": "bco"}, "pairs", "training.preference_loss.type: unknown preference loss 'bco'; choose from sigmoid"),
    ({"type": "ipo", "simpo_gamma": 1.0}, "pairs", "training.preference_loss.simpo_gamma: only the simpo loss"),
    ("kto", "pairs", "training.preference_loss is kto, which learns from unpaired"),
    ("ipo", "unpaired", "only training.preference_loss: kto learns from (this recipe's is ipo)"),
])
def test_a_loss_that_does_not_fit_stops_with_one_line(loss, made, expected, recipe_file, tmp_path):
    data = _pairs_file(tmp_path) if made == "pairs" else _unpaired_file(tmp_path)
    line = _error(*run_cli("train", _preference_recipe(recipe_file, data, loss), "--out", tmp_path / "r"))
    assert expected in line


def test_a_preference_loss_on_another_task_is_a_recipe_error(recipe_file, tmp_path):
    line = _error(*run_cli("train", recipe_file(training={"preference_loss": "simpo"}), "--out", tmp_path / "r"))
    assert line.startswith("error: training.preference_loss: only a preference task")


def test_beta_comes_from_dpo_beta_unless_the_loss_gives_its_own():
    from lmtune.tasks import task_for

    def loss(**training):
        return task_for(recipe_from_dict({"name": "r", "model": "m", "task": {"type": "preference"},
                                          "data": {"train": "t"}, "training": training})).loss

    assert loss(dpo_beta=0.3) == LossSpec("sigmoid", beta=0.3)
    assert loss(dpo_beta=0.3, preference_loss="ipo").beta == 0.3
    assert loss(dpo_beta=0.3, preference_loss={"type": "orpo", "beta": 0.05}) == LossSpec("orpo", beta=0.05)


def test_unpaired_records_are_detected_and_a_generation_file_with_a_label_column_is_not_taken_for_them(tmp_path):
    from lmtune.data.formats import to_example

    record = {"prompt": "p", "completion": "c", "label": "TRUE"}
    assert to_example(dict(record), "f:1", "preference", None).record["label"] is True
    assert to_example(dict(record), "f:1", "generation", None).format == "completion"
    with pytest.raises(UserError, match="not true or false"):
        to_example({**record, "label": "yes"}, "f:2", "preference", None)
