"""GRPO (``task.type: reward``, ``training.grpo``; ``lmtune.train.grpo``): the loss and its gradients on the tiny
model equal TRL's formulas computed here in plain torch from planted completions and rewards; the clipped ratio
clips where it should once samples are reused (``num_iterations``); the KL is zero while LoRA's B is zero;
sampling is a function of the step (a resumed run logs what an uninterrupted one logs); a whole ``lmtune train``
measures the mean reward before and after with intervals; bad recipes stop with one line and exit code 2."""

import json

import pytest
import torch
from conftest import killed_cli, refused_train, run_cli, write_jsonl
from reward_recipe import LIKE_E, QUESTIONS, grpo_with, reward_recipe, reward_training
from tiny import Killed, build_tokenizer, fail_in_step, lora_moved, method_model, train_settings

from lmtune import graders
from lmtune.data.encode import Encoder
from lmtune.distributed import World
from lmtune.graders.base import Grader, GradeResult
from lmtune.train import grpo_loss, loop
from lmtune.train.distill import resumed_step
from lmtune.train.grpo import GRPOObjective, GRPOSettings, Prompt
from lmtune.train.track import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

class Planted(Grader):
    """Rewards given in advance, in sample order (what the grader would have said), with planted failures."""

    def __init__(self, rewards, errors: int = 0):
        super().__init__("planted")
        self.rewards, self.errors, self.seen = list(rewards), errors, []

    def grade(self, samples, items):
        self.seen.append((list(samples), list(items)))
        return GradeResult(self.rewards[:len(samples)], errors=self.errors)


def _prompts(tok, n: int = 2) -> list[Prompt]:
    enc = Encoder(tok, 64)
    return [Prompt(enc.prompt_ids([{"role": "user", "content": QUESTIONS[i % 4]}]), {"letter": "e", "i": i})
            for i in range(n)]


def _planted_rows(tok, n_rows: int, seed: int = 0):
    """Sampled rows as a generator returns them, and the completion each stands for: ``kept`` ends with EOS and
    is followed by junk (padding, more tokens) that must never count; the last row has no EOS (it hit the cap)."""
    gen = torch.Generator().manual_seed(seed)
    eos, rows, kept = tok.eos_token_id, [], []
    for i in range(n_rows):
        body = (torch.randint(10, len(tok), (2 + i % 4,), generator=gen)).tolist()
        if i == n_rows - 1:
            rows.append(body)
            kept.append(body)
        else:
            rows.append(body + [eos] + [7, 8, 9][: i % 3] + [tok.pad_token_id] * (i % 2))
            kept.append(body + [eos])
    return rows, kept


def _objective(tok, grader, rows=None, **settings):
    calls = []

    def sampler(model, prompts, seeds):
        calls.append((prompts, seeds))
        return rows
    objective = GRPOObjective(grader, tok, tok.pad_token_id, GRPOSettings(**settings), seed=0,
                              sampler=sampler if rows is not None else None)
    return objective, calls


def _logps(model, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    """Plain torch: log p(completion token | everything before it), one unpadded sequence."""
    logits = model(input_ids=torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1].float()
    return torch.log_softmax(logits / temperature, dim=-1).gather(1, torch.tensor(completion)[:, None])[:, 0]


def _reference_loss(model, prompts, completions, rewards, *, group, beta, epsilon, temperature, loss_type,
                    max_len, scale=True, old=None):
    """TRL's GRPO loss written out, per sequence, from the planted completions and rewards."""
    r = torch.tensor(rewards, dtype=torch.float32).view(-1, group)
    adv = r - r.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (r.std(dim=1, keepdim=True) + 1e-4)
    adv = adv.flatten()
    per_token, kls = [], []
    for i, completion in enumerate(completions):
        prompt = prompts[i // group]
        logp = _logps(model, prompt, completion, temperature)
        with torch.no_grad(), model.disable_adapter():
            ref = _logps(model, prompt, completion, temperature)
        ratio = torch.exp(logp - (logp.detach() if old is None else old[i]))
        surrogate = -torch.min(ratio * adv[i], torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv[i])
        kl = torch.exp(ref - logp) - (ref - logp) - 1
        per_token.append(surrogate + beta * kl)
        kls.append(kl.mean().item())
    if loss_type == "grpo":
        loss = torch.stack([t.mean() for t in per_token]).mean()
    elif loss_type == "bnpo":
        loss = torch.cat(per_token).sum() / sum(len(t) for t in per_token)
    else:
        loss = torch.cat(per_token).sum() / (len(per_token) * max_len)
    return loss, kls


def _grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def test_group_advantages_are_normalised_within_each_group():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.2, 0.2, 0.2])
    adv, std = grpo_loss.group_advantages(rewards, 3)
    first = torch.tensor([1.0, 0.0, 0.5])
    torch.testing.assert_close(adv[:3], (first - 0.5) / (first.std() + 1e-4))
    assert adv[3:].abs().max() == 0 and std[1] == 0  # a constant group: no signal
    plain, _ = grpo_loss.group_advantages(rewards, 3, scale=False)
    torch.testing.assert_close(plain[:3], first - 0.5)
    assert grpo_loss.completion_ids([5, 6, 1, 7, 1, 0], eos=1) == [5, 6, 1]
    assert grpo_loss.completion_ids([5, 6], eos=1) == [5, 6]


@pytest.mark.parametrize("loss_type, beta, temperature, scale", [
    ("grpo", 0.04, 1.0, True), ("grpo", 0.5, 0.7, False), ("bnpo", 0.2, 1.0, True), ("dr_grpo", 0.2, 1.3, True)])
def test_loss_and_gradients_equal_the_hand_computed_reference(loss_type, beta, temperature, scale):
    tok = build_tokenizer()
    model = lora_moved(method_model(tok), std=0.3).train()
    prompts, group, max_len = _prompts(tok, 2), 3, 6
    rows, kept = _planted_rows(tok, 6)
    rewards = [1.0, 0.0, 0.5, 0.3, 0.9, 0.1]
    grader = Planted(rewards)
    objective, calls = _objective(tok, grader, rows, num_generations=group, max_completion_length=max_len,
                                  beta=beta, temperature=temperature, scale_rewards=scale, loss_type=loss_type)
    value = objective.loss_sum(model, objective.collate(prompts, tok.pad_token_id)) / len(prompts)
    value.backward()
    got = _grads(model)
    expected, kls = _reference_loss(model, [p.ids for p in prompts], kept, rewards, group=group, beta=beta,
                                    epsilon=0.2, temperature=temperature, loss_type=loss_type, max_len=max_len,
                                    scale=scale)
    expected.backward()
    want = _grads(model)
    assert value.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    assert got.keys() == want.keys() and any("lora_A" in n for n in got)
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)
    # Each prompt was sampled num_generations times, and the grader saw the decoded completions with their items.
    assert calls[0][0] == [p.ids for p in prompts for _ in range(group)]
    samples, items = grader.seen[0]
    assert samples == [tok.decode(k, skip_special_tokens=True).strip() for k in kept]
    assert [item["i"] for item in items] == [0, 0, 0, 1, 1, 1]
    logged = objective.window_metrics(World())
    assert logged["reward"] == pytest.approx(sum(rewards) / 6)
    assert logged["kl"] == pytest.approx(sum(kls) / 6, rel=1e-4) and logged["kl"] > 0
    assert logged["completions/mean_length"] == pytest.approx(sum(len(k) for k in kept) / 6)
    assert logged["clip_ratio"] == 0.0  # one iteration: the ratio is 1
    assert logged["reward_std"] == pytest.approx((torch.tensor(rewards[:3]).std() + torch.tensor(rewards[3:]).std())
                                                 .item() / 2)


def test_the_clipped_surrogate_clips_where_the_ratio_leaves_the_band():
    old = torch.zeros(2, 4)
    logps = torch.log(torch.tensor([[0.5, 0.9, 1.1, 1.5]] * 2)).requires_grad_()
    terms = grpo_loss.per_token_terms(logps, old, None, torch.tensor([1.0, -1.0]), beta=0.0, epsilon=0.2)
    torch.testing.assert_close(terms.loss, torch.tensor([[-0.5, -0.9, -1.1, -1.2], [0.8, 0.9, 1.1, 1.5]]))
    assert terms.clipped.tolist() == [[False, False, False, True], [True, False, False, False]]
    terms.loss.sum().backward()
    # d/dlogp of ratio * A is ratio * A; a clipped token gets none.
    torch.testing.assert_close(logps.grad, torch.tensor([[-0.5, -0.9, -1.1, 0.0], [0.0, 0.9, 1.1, 1.5]]))


def test_num_iterations_2_reuses_the_samples_and_clips_against_the_sampling_policy():
    tok = build_tokenizer()
    model = lora_moved(method_model(tok), std=0.3).train()
    prompts, group = _prompts(tok, 2), 3
    rows, kept = _planted_rows(tok, 6, seed=1)
    rewards = [1.0, 0.0, 0.5, 0.3, 0.9, 0.1]
    objective, calls = _objective(tok, Planted(rewards), rows, num_generations=group, max_completion_length=6,
                                  num_iterations=2, beta=0.1)
    objective.loss_sum(model, objective.collate(prompts, tok.pad_token_id)).backward()
    model.zero_grad(set_to_none=True)
    objective.window_metrics(World())
    with torch.no_grad():
        old = [_logps(model, prompts[i // group].ids, k, 1.0) for i, k in enumerate(kept)]
        for name, p in model.named_parameters():  # an optimizer step, large enough to leave the clipping band
            if "lora_" in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.5)
    others = _prompts(tok, 4)[2:]  # the loop hands the next step other prompts: the round's samples are reused
    value = objective.loss_sum(model, objective.collate(others, tok.pad_token_id)) / 2
    value.backward()
    got = _grads(model)
    assert len(calls) == 1
    expected, _ = _reference_loss(model, [p.ids for p in prompts], kept, rewards, group=group, beta=0.1, epsilon=0.2,
                                  temperature=1.0, loss_type="grpo", max_len=6, old=old)
    expected.backward()
    want = _grads(model)
    assert value.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        r = torch.tensor(rewards).view(-1, group)
        adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).flatten()
        ratios = [torch.exp(_logps(model, prompts[i // group].ids, k, 1.0) - old[i]) for i, k in enumerate(kept)]
    clipped = [((x > 1.2) & (a > 0)) | ((x < 0.8) & (a < 0)) for x, a in zip(ratios, adv)]
    share = sum(c.sum().item() for c in clipped) / sum(len(c) for c in clipped)
    assert 0 < share < 1
    assert objective.window_metrics(World())["clip_ratio"] == pytest.approx(share)
    objective.loss_sum(model, objective.collate(others, tok.pad_token_id))  # step 3: a new round samples again
    assert len(calls) == 2


def test_the_kl_is_zero_while_lora_b_is_zero():
    tok = build_tokenizer()
    model = method_model(tok).train()  # LoRA's B starts at zero: policy == reference
    rows, _ = _planted_rows(tok, 4)
    objective, _ = _objective(tok, Planted([1.0, 0.0, 0.0, 1.0]), rows, num_generations=2, beta=1.0)
    objective.loss_sum(model, objective.collate(_prompts(tok, 2), tok.pad_token_id)).backward()
    assert objective.window_metrics(World())["kl"] == 0.0


def test_sampling_depends_only_on_the_seed_and_leaves_the_global_rng_alone():
    tok = build_tokenizer()
    model = lora_moved(method_model(tok), std=1.0).train()
    objective, _ = _objective(tok, Planted([0.0] * 8), num_generations=4, max_completion_length=8, temperature=1.5)
    ids = [p.ids for p in _prompts(tok, 2) for _ in range(4)]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = objective.sample(model, ids, list(range(5, 13)))
    assert torch.equal(torch.get_rng_state(), state) and model.training
    assert objective.sample(model, ids, list(range(5, 13))) == first != objective.sample(model, ids, list(range(6, 14)))
    assert len({tuple(r) for r in first}) > 1  # the group's completions differ


def test_constant_groups_and_grader_failures_are_counted_and_warned(capsys):
    tok = build_tokenizer()
    model = method_model(tok).train()
    rows, _ = _planted_rows(tok, 4)
    objective, _ = _objective(tok, Planted([0.5, 0.5, 0.0, 0.0], errors=1), rows, num_generations=2)
    for _ in range(3):
        objective.loss_sum(model, objective.collate(_prompts(tok, 2), tok.pad_token_id))
    logged = objective.window_metrics(World())
    assert logged["frac_reward_zero_std"] == 1.0 and logged["grader_errors"] == 3
    err = capsys.readouterr().err
    # Warned once (at the first micro-batch), not at every one.
    assert err.count("2 of 2 groups had the same reward") == 1 and err.count("could not be graded") == 1


def test_a_resumed_run_samples_and_logs_what_the_uninterrupted_run_does(tmp_path, monkeypatch):
    tok = build_tokenizer()
    train, val = _prompts(tok, 8), _prompts(tok, 3)
    settings = train_settings(max_steps=6, save_every=2, log_every=1, eval_every=2, batch_size=2, learning_rate=5e-2)

    def objective(start_step=0):
        return GRPOObjective(graders.build(LIKE_E), tok, tok.pad_token_id,
                             GRPOSettings(num_generations=4, max_completion_length=8), seed=0, start_step=start_step)
    loop.train(lora_moved(method_model(tok), std=0.3), train, val, settings, tmp_path / "a", tok.pad_token_id,
               quiet=True, objective=objective())
    restore = fail_in_step(monkeypatch, 5)
    with pytest.raises(Killed):
        loop.train(lora_moved(method_model(tok), std=0.3), train, val, settings, tmp_path / "b", tok.pad_token_id,
                   quiet=True, objective=objective())
    restore()
    assert resumed_step(tmp_path / "b" / "checkpoints") == 4
    loop.train(lora_moved(method_model(tok, seed=9), std=0.3), train, val, settings, tmp_path / "b", tok.pad_token_id,
               resume=True, quiet=True, objective=objective(start_step=4))
    expected = (tmp_path / "a" / "metrics.jsonl").read_bytes()
    assert (tmp_path / "b" / "metrics.jsonl").read_bytes() == expected
    lines = read_metrics(tmp_path / "a" / "metrics.jsonl")
    train_lines = [m for m in lines if m["split"] == "train"]
    assert [m["step"] for m in train_lines] == [1, 2, 3, 4, 5, 6]
    assert any(m["reward_std"] > 0 for m in train_lines)  # groups with signal: the test means something
    validation = [m for m in lines if m["split"] == "validation"]
    assert [m["step"] for m in validation] == [2, 4, 6]
    assert all(m["loss"] == pytest.approx(-m["reward"]) for m in validation)


def test_a_tiny_grpo_run_measures_the_mean_reward_before_and_after_with_intervals(tmp_path, tiny_model_dir):
    # An inline template's completion ({completion} by default) is not rendered for bare prompts.
    template = {"system": "you are a helpful assistant", "prompt": "question: {prompt}"}
    path = reward_recipe(tmp_path, tiny_model_dir, task={"type": "reward", "template": template})
    code, output = run_cli("train", path, "--out", tmp_path / "run", "--quiet")
    assert code == 0, output
    run = tmp_path / "run"
    results = json.loads((run / "eval.json").read_text())
    assert results["task"] == "reward" and results["primary_metric"] == "graders.reward"
    assert set(results["results"]) == {"zero_shot", "finetuned"}  # few-shot would show answers: not applicable
    for system in ("zero_shot", "finetuned"):
        scored = results["results"][system]
        assert scored["graders"]["reward"]["n"] == 8 and 0 <= scored["graders.reward"] <= 1
        lo, hi = scored["ci"]["graders.reward"]
        assert lo <= scored["graders.reward"] <= hi
        rows = [json.loads(line) for line in (run / "predictions" / f"{system}.jsonl").read_text().splitlines()]
        assert [r["graders"]["reward"] for r in rows] == [float("e" in r["prediction"]) for r in rows]
        assert all(r["input"].startswith("question: ") for r in rows)
    assert [t["metric"] for t in results["significance"]] == ["graders.reward"]
    lines = read_metrics(run / "metrics.jsonl")
    train_lines = [m for m in lines if m["split"] == "train"]
    assert [m["step"] for m in train_lines] == [1, 2, 3, 4]
    assert all({"reward", "reward_std", "kl", "clip_ratio", "completions/mean_length"} <= set(m) for m in train_lines)
    assert train_lines[0]["kl"] == 0.0  # the first samples were scored before any update
    assert [m["step"] for m in lines if m["split"] == "validation" and "reward" in m] == [2, 4]
    assert (run / "report.html").exists() and (run / "final" / "adapter_config.json").exists()


def test_lmtune_train_resumes_a_killed_grpo_run_as_if_it_had_not_stopped(tmp_path, tiny_model_dir):
    path = reward_recipe(tmp_path, tiny_model_dir, training={**reward_training(), "max_steps": 6, "save_every": 2},
                          eval={"systems": ["finetuned"], "max_new_tokens": 8})
    code, output = run_cli("train", path, "--out", tmp_path / "a", "--quiet")
    assert code == 0, output
    killed_cli(["train", path, "--out", tmp_path / "b"],
               ready=lambda lines: (tmp_path / "b" / "checkpoints" / "step-2").exists())
    assert not (tmp_path / "b" / "eval.json").exists() or "finetuned" not in (tmp_path / "b" / "eval.json").read_text()
    code, output = run_cli("train", path, "--out", tmp_path / "b", "--resume", "--quiet")
    assert code == 0, output
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == (tmp_path / "a" / "metrics.jsonl").read_text()
    # The same weights at the end: the same greedy answers, the same rewards.
    predictions = [(tmp_path / run / "predictions" / "finetuned.jsonl").read_text() for run in "ab"]
    assert predictions[0] == predictions[1]


def test_the_reward_task_reads_prompt_records_and_never_trains_on_their_completion(tmp_path, tiny_model_dir):
    from lmtune.data import prepare
    from lmtune.recipe import load_recipe
    from lmtune.tasks import task_for

    records = [{"prompt": f"{QUESTIONS[i % 4]} {i}", "completion": "great indeed"} for i in range(10)]
    path = reward_recipe(tmp_path, tiny_model_dir, data={"train": str(write_jsonl(tmp_path / "c.jsonl", records))})
    recipe = load_recipe(path)
    assert set(recipe.eval.graders) == {"reward"} and recipe.eval.rank_by == "reward"
    prepared = prepare.prepare(recipe.data, "reward", None, 0, recipe.model.name)
    task = task_for(recipe)
    tok = build_tokenizer()
    encoded = task.encode(prepared, tok, task.encoder(tok), _template(prepared))
    assert len(encoded["train"]) > 4 and "test" not in encoded
    for prompt in encoded["train"]:
        text = tok.decode(prompt.ids)
        assert "great indeed" not in text and prompt.item["completion"] == "great indeed"


def test_a_bare_prompt_is_a_record_format_of_its_own():
    from lmtune.data.formats import detect, to_example

    assert detect({"prompt": "name it", "answer": "x"}).name == "prompt"
    assert detect({"prompt": "name it", "completion": "x"}).name == "completion"
    example = to_example({"prompt": "name it", "answer": "x"}, "f.jsonl:1", "reward", None)
    assert example.record == {"prompt": "name it"} and example.extra == {"answer": "x"}
    with pytest.raises(Exception, match="missing field 'completion'"):
        to_example({"prompt": "name it"}, "f.jsonl:1", "generation", None)


def _template(prepared):
    from lmtune.data.templates import resolve

    return resolve(None, prepared.splits["train"][0].format)


@pytest.mark.parametrize("change, expected", [
    ({"training": {"grpo": None}}, "error: training.grpo: task.type reward learns from a grader's rewards"),
    ({"task": {"type": "generation"}}, "error: training.grpo: GRPO trains on the prompts of a task.type: reward"),
    ({"method": {"name": "full"}}, "error: training.grpo: needs an adapter method"),
    ({"training": {"grpo": grpo_with(grader={**LIKE_E, "operation": "contains"})}}, "training.grpo.grader.operation"),
    ({"training": {"grpo": grpo_with(grader={"type": "cosine_check"})}}, "unknown grader type 'cosine_check'"),
    ({"training": {"grpo": grpo_with(num_generations=1)}}, "training.grpo.num_generations"),
    ({"training": {"grpo": grpo_with(loss_type="dapo")}}, "training.grpo.loss_type"),
    ({"training": {"packing": True}}, "error: training.packing: GRPO batches prompts"),
    ({"training": {"preference_loss": "kto"}}, "error: training.preference_loss: only a preference task"),
    ({"training": {"max_length": 12}}, "error: training.max_length: 12 leaves no room"),
    ({"training": {"grpo": grpo_with(grader={**LIKE_E, "reference": "{{item.missing}}"})}},
     "training.grpo.grader.reference: {{item.missing}}"),
])
def test_bad_grpo_recipes_exit_2_before_the_model_loads(tmp_path, tiny_model_dir, no_model_load, change, expected):
    path = reward_recipe(tmp_path, tiny_model_dir, **change)
    line = refused_train(path, tmp_path / "run")
    assert expected in line, line


def test_records_a_reward_task_cannot_read_are_refused_with_their_line(tmp_path, tiny_model_dir, no_model_load):
    data = write_jsonl(tmp_path / "labelled.jsonl", [{"text": "fine", "label": "a"}] * 4)
    line = refused_train(reward_recipe(tmp_path, tiny_model_dir, data={"train": str(data)}), tmp_path / "run")
    assert f"{data}:1" in line and "reward" in line and "{prompt}" in line
