"""Training in several processes (``lmtune.train.parallel``, ``lmtune.launch``): real torchrun processes on
gloo, the tiny model. N processes x batch b must train exactly as 1 process x batch N*b, only rank 0 writes,
and a run killed mid-training resumes to the losses it would have logged."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from multiproc import (
    LMTUNE,
    accelerate_launch,
    assert_no_process_left,
    assert_refused_before_launch,
    assert_same_losses,
    env,
    killed_after_checkpoint,
    losses,
    recipe_maker,
    start_killable,
    train,
    train_on_two_nodes,
    wait_for,
)


@pytest.fixture(scope="module")
def recipes(tmp_path_factory, tiny_model_dir):
    return recipe_maker(tmp_path_factory.mktemp("parallel"), tiny_model_dir)


@pytest.mark.parametrize("method, launcher", [("lora", "processes"), ("full", "two-nodes")])
def test_two_processes_of_batch_4_log_the_losses_of_one_process_of_batch_8(recipes, tmp_path, method, launcher):
    peft = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0} if method == "lora" else {}
    # Full fine-tuning at a full fine-tuning's learning rate: at 1e-2 every weight moves so far per step that
    # the order of a float sum (one batch, or two halves all-reduced) shows in the 5th digit by step 4.
    lr = 1e-2 if method == "lora" else 1e-3
    recipe = recipes(method, method={"name": method, "peft": peft}, training={"learning_rate": lr})
    train(LMTUNE, recipe, tmp_path / "one", "--set", "training.batch_size=8")
    if launcher == "processes":
        train(LMTUNE, recipe, tmp_path / "two", "--processes", "2")
    else:  # torchrun's multi-node command, as two machines of one process each
        train_on_two_nodes(recipe, tmp_path / "two")
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-4), step
    assert losses(tmp_path / "two", "validation") == pytest.approx(losses(tmp_path / "one", "validation"), abs=1e-4)


@pytest.fixture(scope="module")
def pair(recipes, tmp_path_factory):
    """One run of 1 process x batch 8 and one of 2 processes x batch 4 (started by ``accelerate launch``), with
    every prompting system."""
    recipe = recipes("pair", eval={"systems": ["zero_shot", "few_shot", "finetuned"], "few_shot_k": 2})
    root = tmp_path_factory.mktemp("pair")
    train(LMTUNE, recipe, root / "one", "--set", "training.batch_size=8")
    train(accelerate_launch(), recipe, root / "two")
    return root / "one", root / "two"


def test_only_the_main_process_writes_the_run_directory(pair):
    one, two = pair

    def tree(out):
        return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if "checkpoints" not in p.parts)
    assert tree(two) == tree(one)
    metrics = (two / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == len(set(metrics))  # each step logged once, not once per process
    newest = sorted((two / "checkpoints").glob("step-*"))[-1]
    assert (newest / "rng-rank1.pt").exists() and not (newest / "rng-rank0.pt").exists()


def test_evaluation_shared_by_two_processes_gives_the_predictions_and_metrics_of_one(pair):
    one, two = pair
    for system in ("zero_shot", "few_shot", "finetuned"):
        rows = [[json.loads(line) for line in (out / "predictions" / f"{system}.jsonl").read_text().splitlines()]
                for out in (one, two)]
        assert [(r["input"], r["reference"], r["prediction"]) for r in rows[1]] == \
            [(r["input"], r["reference"], r["prediction"]) for r in rows[0]], system
        # Label scores are log-probabilities from batches of other compositions (and, fine-tuned, from weights
        # trained in two processes): equal to float noise.
        for a, b in zip(rows[0], rows[1]):
            assert b["scores"] == pytest.approx(a["scores"], abs=1e-3), system
    results = [json.loads((out / "eval.json").read_text())["results"] for out in (one, two)]
    for system in results[0]:
        for key in ("accuracy", "f1_macro", "ci", "prompt_tokens_mean", "truncated_prompts"):
            assert results[1][system][key] == results[0][system][key], (system, key)


def test_a_killed_two_process_run_resumes_to_the_losses_of_an_uninterrupted_one(recipes, tmp_path):
    recipe = recipes("resume", training={"max_steps": 16, "save_every": 2, "eval_every": 100, "log_every": 1,
                                         "keep_checkpoints": 16})
    # The uninterrupted reference: one process of the same global batch (measured: 1e-6 apart).
    train(LMTUNE, recipe, tmp_path / "whole", "--set", "training.batch_size=8")
    killed_after_checkpoint(recipe, tmp_path / "cut", 6)  # and no training process outlived it
    cut = losses(tmp_path / "cut")
    assert max(cut) < 16  # it was stopped before the end
    train(LMTUNE, recipe, tmp_path / "cut", "--processes", "2", "--resume")
    assert_same_losses(tmp_path / "cut", tmp_path / "whole", 1e-5)


def test_resume_with_another_process_count_keeps_the_global_batch_or_is_refused(recipes, tmp_path):
    recipe = recipes("world", training={"max_steps": 4, "save_every": 2})
    out = tmp_path / "run"
    train(LMTUNE, recipe, out, "--processes", "2")  # 2 processes x 4 examples
    refused = train(LMTUNE, recipe, out, "--resume", check=False)  # 1 x 4: each step would see other examples
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: training.batch_size: the checkpoint was trained with 8 examples per "
                                     "micro-batch over 2 process(es); this run has 1 x 4. Resume with "
                                     "training.batch_size: 8")
    assert_refused_before_launch(recipe, out, "--set", "training.batch_size=8", key="training.batch_size")  # 2 x 8
    train(LMTUNE, recipe, out, "--resume", "--set", "training.batch_size=8")  # 1 x 8 = 2 x 4: accepted


def test_a_process_that_dies_stops_the_others_with_one_line(recipes, tmp_path):
    recipe = recipes("dies", training={"max_steps": 100000, "save_every": 1000, "eval_every": 1000})
    run = start_killable(recipe, tmp_path / "run")
    wait_for(tmp_path / "run" / "metrics.jsonl", run)
    victim = next(pid for pid in _descendants(run.pid) if _rank_of(pid) == "1")
    os.kill(victim, signal.SIGKILL)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 1
    assert "error: --processes: training process 1 was killed by signal 9; the other processes were stopped" in err
    assert "Traceback" not in err
    assert_no_process_left(tmp_path / "run")


def test_ctrl_c_stops_every_process_and_says_how_to_resume(recipes, tmp_path):
    recipe = recipes("ctrl-c", training={"max_steps": 100000, "save_every": 4, "eval_every": 1000})
    run = start_killable(recipe, tmp_path / "run")
    wait_for(tmp_path / "run" / "checkpoints" / "step-4", run)
    os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the whole process group
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130
    assert "interrupted (signal 2); the training processes were stopped. Continue with --resume" in err
    assert "Traceback" not in err and "death signal" not in err
    assert_no_process_left(tmp_path / "run")


def _descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children] + [d for c in children for d in _descendants(int(c))]


def _rank_of(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    found = [e for e in environ if e.startswith(b"RANK=")]
    return found[0].split(b"=", 1)[1].decode() if found else None


def test_more_processes_than_cores_is_refused_before_anything_starts(recipes, tmp_path):
    done = train(LMTUNE, recipes("many"), tmp_path / "run", "--processes", "999", check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("error: --processes: 999 processes asked, but this machine has")
    assert not (tmp_path / "run").exists()


def test_a_recipe_error_in_the_processes_is_said_once(recipes, tmp_path):
    recipe = recipes("bad", eval={"forgetting": {"data": str(tmp_path / "missing.jsonl")}})
    done = train(LMTUNE, recipe, tmp_path / "run", "--processes", "2", check=False)
    assert done.returncode == 2
    assert done.stderr.count("error: ") == 1 and "missing.jsonl" in done.stderr


def test_accelerate_launch_on_cpu_with_several_processes_is_refused(recipes, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    done = subprocess.run([str(accelerate), "launch", "--cpu", "--num_processes", "2", "-m", "lmtune.cli", "train",
                           str(recipes("accel")), "--out", str(tmp_path / "run"), "--quiet"], env=env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "error: --num_processes: accelerate launch --cpu starts one process, not the 2 asked for" in done.stderr
    assert not (tmp_path / "run").exists()


def test_forgetting_and_bias_probes_shared_by_two_processes_give_the_numbers_of_one(tmp_path, tiny_model_dir):
    from conftest import sentiment_records, write_jsonl, write_recipe

    records = [{**r, "review": r["review"].replace(" #", " said she #" if i % 2 else " said he #")}
               for i, r in enumerate(sentiment_records())]
    general = write_jsonl(tmp_path / "general.jsonl",
                          [{"text": f"the cat number {i} sat on the mat and then it slept all day"} for i in range(30)])
    quiz = write_jsonl(tmp_path / "quiz.jsonl", [{"question": f"what follows {i}?", "choices": [str(i + 1), "x", "y"],
                                                  "answer": "A"} for i in range(13)])
    recipe = write_recipe(tmp_path / "probes.yaml", tiny_model_dir, write_jsonl(tmp_path / "reviews.jsonl", records),
                          training={"max_steps": 2, "eval_every": 2, "max_length": 64},
                          eval={"systems": ["zero_shot", "finetuned"], "bias": {"terms": "gender"}, "batch_size": 2,
                                "forgetting": {"data": [str(general), str(quiz)], "max_examples": 13}})
    train(LMTUNE, recipe, tmp_path / "one", "--set", "training.batch_size=8")
    train(LMTUNE, recipe, tmp_path / "two", "--processes", "2")
    one, two = (json.loads((tmp_path / out / "eval.json").read_text()) for out in ("one", "two"))
    assert one["bias"]["zero_shot"]["n_tested"] > 2
    for system in ("zero_shot", "finetuned"):
        assert two["bias"][system]["flip_rate"] == one["bias"][system]["flip_rate"], system
    for model in ("base", "finetuned"):
        quiz_one, quiz_two = one["forgetting"][model]["quiz"], two["forgetting"][model]["quiz"]
        assert quiz_two["correct"] == quiz_one["correct"] and quiz_two["n"] == 13
        general_one, general_two = one["forgetting"][model]["general"], two["forgetting"][model]["general"]
        assert len(general_one["units"]) >= 3  # batches of blocks, shared out between the processes
        assert [n for _, n in general_two["units"]] == [n for _, n in general_one["units"]]
        assert [nll for nll, _ in general_two["units"]] == pytest.approx([nll for nll, _ in general_one["units"]],
                                                                          rel=1e-4)


@pytest.mark.parametrize("loss", ["sigmoid", "kto"])
def test_two_processes_of_batch_4_train_preferences_as_one_process_of_batch_8(tmp_path, tiny_model_dir, loss):
    """Full fine-tuning reads the reference log-probs computed before training, each process a share of them
    (``parallel.fill_shared``); KTO's z0 is the mean over the whole micro-batch of both processes. The losses and
    the test's reward metrics are those of one process."""
    from conftest import write_jsonl, write_recipe

    liked, disliked = ("a wonderful film, I loved it", "great acting"), ("dull and far too long", "it was bad")
    if loss == "sigmoid":  # DPO
        rows = [{"prompt": f"how was the movie {i}?", "chosen": f"{liked[i % 2]} {i}",
                 "rejected": f"{disliked[i % 2]} {i}"} for i in range(40)]
    else:
        rows = [{"prompt": f"how was the movie {i}?", "completion": f"{(liked if i % 3 else disliked)[i % 2]} {i}",
                 "label": bool(i % 3)} for i in range(40)]
    data = write_jsonl(tmp_path / "records.jsonl", rows)
    recipe = write_recipe(tmp_path / f"{loss}.yaml", tiny_model_dir, data, method={"name": "full", "peft": {}},
                          task={"type": "preference", "labels": None, "template": None},
                          data={"train": str(data), "fields": {}, "split": {"validation": 0.2, "test": 0.2,
                                                                            "stratify": False}},
                          training={"max_steps": 4, "learning_rate": 1e-3, "dpo_beta": 0.5, "eval_every": 2,
                                    "max_length": 64, "preference_loss": loss},
                          eval={"systems": ["zero_shot", "finetuned"]})
    train(LMTUNE, recipe, tmp_path / "one", "--set", "training.batch_size=8")
    train(LMTUNE, recipe, tmp_path / "two", "--processes", "2")
    for split in ("train", "validation"):
        one, two = losses(tmp_path / "one", split), losses(tmp_path / "two", split)
        assert sorted(two) == sorted(one) and len(one) >= 2
        assert [two[s] for s in sorted(two)] == pytest.approx([one[s] for s in sorted(one)], abs=1e-6), split
    assert min(losses(tmp_path / "one").values()) < losses(tmp_path / "one")[1]  # it learned
    results = [json.loads((tmp_path / out / "eval.json").read_text())["results"] for out in ("one", "two")]
    for system in ("zero_shot", "finetuned"):
        assert results[1][system]["reward_accuracy"] == results[0][system]["reward_accuracy"]
        assert results[1][system]["reward_margin"] == pytest.approx(results[0][system]["reward_margin"], abs=1e-4)


def test_two_processes_of_2_prompts_train_grpo_as_one_process_of_4(tmp_path, tiny_model_dir):
    """Each completion is sampled from a random stream of its own, seeded by the prompt's place in the micro-batch
    of all processes (``lmtune.inference.row_sampling``): the processes sample, grade and learn what one does."""
    from conftest import run_cli
    from reward_recipe import reward_recipe

    from lmtune.train.track import read_metrics

    recipe = reward_recipe(tmp_path, tiny_model_dir, eval={"systems": ["finetuned"]})
    code, output = run_cli("train", recipe, "--out", tmp_path / "one", "--set", "training.batch_size=4", "--quiet")
    assert code == 0, output
    train(LMTUNE, recipe, tmp_path / "two", "--processes", "2")
    lines = [read_metrics(tmp_path / out / "metrics.jsonl") for out in ("one", "two")]
    assert [(m["step"], m["split"]) for m in lines[1]] == [(m["step"], m["split"]) for m in lines[0]]
    assert len(lines[0]) == 6 and any(m.get("reward_std", 0) > 0 for m in lines[0])  # groups that teach
    for one, two in zip(*lines):
        assert set(two) == set(one)
        for name, value in one.items():
            expected = pytest.approx(value, rel=1e-4, abs=1e-7) if isinstance(value, float) else value
            assert two[name] == expected, (one["step"], name)
    predictions = [(tmp_path / out / "predictions" / "finetuned.jsonl").read_text() for out in ("one", "two")]
    assert predictions[1] == predictions[0]
