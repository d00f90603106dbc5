"""Blind A/B judging rounds on a real tiny generation run: blinding, win rate and interval, history, left-out items,
the run's human_eval.json and report, the preference pairs, and bad input."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from conftest import run_cli
from judge_runs import copy_run, generation_run, set_prediction
from scipy.stats import bootstrap

from lmtune.errors import UserError
from lmtune.guidance import db, judge_results, judging, win_rate
from lmtune.report.page import write_report
from lmtune.run_dir import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir) -> RunDir:
    return RunDir(generation_run(tmp_path_factory.mktemp("judging"), tiny_model_dir))


@pytest.fixture
def conn(tmp_path):
    with db.opened(tmp_path / "guidance.sqlite", judging.SCHEMA) as conn:
        yield conn


def _round(conn, run, **kw) -> judging.Round:
    return judging.create(conn, run, run.path.name, "zero_shot", "finetuned", **kw)


def test_each_shown_side_maps_back_to_the_system_that_wrote_it(conn, run):
    created = _round(conn, run, seed=7)
    outputs = {s: [r["prediction"] for r in run.read_predictions(s)] for s in ("zero_shot", "finetuned")}
    assert created.n_items == len(outputs["zero_shot"]) - created.n_identical >= 4
    sides, lines = [], {row["idx"]: row["line"] for row in conn.execute("SELECT idx, line FROM judge_items")}
    while (item := judging.next_item(conn, created.name, "ann")) is not None:
        assert set(item) == {"index", "input", "reference", "A", "B"}  # sides only, never a system's name
        system_of_a = {"a": "zero_shot", "b": "finetuned"}[judging.unblind("A", judging.flipped(7, item["index"]))]
        system_of_b = "finetuned" if system_of_a == "zero_shot" else "zero_shot"
        assert item["A"] == outputs[system_of_a][lines[item["index"]] - 1]
        assert item["B"] == outputs[system_of_b][lines[item["index"]] - 1]
        sides.append(system_of_a)
        judging.answer(conn, created.name, "ann", item["index"], "A")
    assert set(sides) == {"zero_shot", "finetuned"}  # seed 7 shows each system on the left at least once
    found = judge_results.results(conn, created.name)
    assert (found["wins_a"], found["wins_b"]) == (sides.count("zero_shot"), sides.count("finetuned"))
    assert [judging.flipped(7, i) for i in range(created.n_items)] == [
        bool(row["flipped"]) for row in conn.execute("SELECT flipped FROM judge_items ORDER BY idx")]


def test_a_chat_input_is_shown_as_json_not_as_a_python_repr(conn, run):
    chat = copy_run(run.path, "chat")
    for system in ("zero_shot", "finetuned"):
        rows = chat.read_predictions(system)
        for row in rows:
            row["input"] = [{"role": "user", "content": f"café {row['input']}"}]
        chat.prediction(system).write_text("".join(json.dumps(r) + "\n" for r in rows))
    created = judging.create(conn, chat, "chat", "zero_shot", "finetuned", seed=1)
    item = judging.next_item(conn, created.name, "ann")
    assert json.loads(item["input"])[0]["role"] == "user"
    assert item["input"].startswith('[{"role": "user", "content": "café ')


def test_a_round_without_a_seed_draws_one_and_keeps_it(conn, run):
    first, second = _round(conn, run), _round(conn, run)
    assert first.name == "gen-1" and second.name == "gen-2"
    assert judging.get(conn, first.name).seed == first.seed and first.seed != second.seed


def test_win_rate_counts_ties_half_and_its_interval_is_the_bootstrap_over_items():
    winners = ["b"] * 6 + ["a"] * 2 + ["tie"] * 2
    answers = [{"index": i, "annotator": "ann", "winner": w} for i, w in enumerate(winners)]
    found = win_rate.summarize(answers)
    assert (found["wins_b"], found["wins_a"], found["ties"], found["win_rate_b"]) == (6, 2, 2, 0.7)
    scores = np.array([win_rate.SCORE[w] for w in winners])
    expected = bootstrap((scores,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(0))
    assert found["ci_low"] == pytest.approx(expected.confidence_interval.low)
    assert found["ci_high"] == pytest.approx(expected.confidence_interval.high)
    assert found["ci_low"] < 0.7 < found["ci_high"] and 0 < found["p_value"] < 1
    # A second annotator agreeing on every item is not new evidence about other items: the items are resampled.
    twice = answers + [{**a, "annotator": "other"} for a in answers]
    again = win_rate.summarize(twice)
    assert again["answers"] == 20 and again["items_judged"] == 10
    assert (again["win_rate_b"], again["ci_low"], again["ci_high"]) == (0.7, found["ci_low"], found["ci_high"])
    assert again["annotators"] == {"ann": win_rate.counts(answers), "other": win_rate.counts(answers)}
    assert win_rate.interval(answers[:1]) == {"win_rate_b": 1.0, "ci_low": None, "ci_high": None, "p_value": None}


def test_judging_again_replaces_the_live_answer_and_keeps_the_old_one(conn, run):
    created = _round(conn, run)
    judging.answer(conn, created.name, "ann", 0, "A", "first look")
    judging.answer(conn, created.name, "ann", 0, "tie", "  on reflection ")
    judging.answer(conn, created.name, "other", 0, "B")
    live = judging.own_answers(conn, created.name, "ann")
    assert [(a["index"], a["choice"], a["reason"]) for a in live] == [(0, "tie", "on reflection")]
    history = judging.own_answers(conn, created.name, "ann", history=True)
    assert [(a["choice"], a["live"]) for a in history] == [("A", False), ("tie", True)]
    assert judging.progress(conn, created.name, "ann") == {"done": 1, "total": created.n_items}
    assert judging.next_item(conn, created.name, "ann")["index"] == 1
    found = judge_results.results(conn, created.name)
    assert found["answers"] == 2 and found["ties"] == 1 and found["items_judged"] == 1


def test_a_skipped_item_leaves_the_queue_and_counts_in_no_win_rate(conn, run):
    created = _round(conn, run, seed=5)
    judging.answer(conn, created.name, "ann", 0, "skip")
    assert judging.next_item(conn, created.name, "ann")["index"] == 1
    assert judging.next_item(conn, created.name, "other")["index"] == 0  # still there for everyone else
    assert judging.progress(conn, created.name, "ann")["done"] == 1
    judging.answer(conn, created.name, "ann", 1, "B")
    judging.answer(conn, created.name, "other", 0, "tie")
    found = judge_results.results(conn, created.name)
    assert (found["answers"], found["skipped"], found["items_judged"], found["ties"]) == (2, 1, 2, 1)
    assert found["annotators"]["ann"]["answers"] == 1 and found["annotators"]["ann"]["skipped"] == 1
    b_wins = not judging.flipped(5, 1)
    assert found["win_rate_b"] == (int(b_wins) + 0.5) / 2
    judging.answer(conn, created.name, "ann", 0, "A", "saw it after all")  # a skip can be answered later
    assert judge_results.results(conn, created.name)["skipped"] == 0


def test_a_database_from_before_skip_is_upgraded_keeping_every_answer(tmp_path, run):
    path = tmp_path / "guidance.sqlite"
    old = judging.SCHEMA.replace("'tie', 'skip'", "'tie'")
    with db.opened(path, old) as conn:
        created = _round(conn, run, seed=2)
        judging.answer(conn, created.name, "ann", 0, "A", "first")
        judging.answer(conn, created.name, "ann", 0, "B", "second")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute("INSERT INTO judge_answers (round, idx, annotator, choice, created_at) "
                         "VALUES (?, 1, 'ann', 'skip', 0)", (created.name,))
    with judging.opened(path) as conn:
        history = judging.own_answers(conn, created.name, "ann", history=True)
        assert [(a["choice"], a["reason"], a["live"]) for a in history] == [("A", "first", False),
                                                                             ("B", "second", True)]
        judging.answer(conn, created.name, "ann", 1, "skip")
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):  # still one live answer per annotator and item
            conn.execute("INSERT INTO judge_answers (round, idx, annotator, choice, created_at) "
                         "VALUES (?, 1, 'ann', 'A', 0)", (created.name,))
    with judging.opened(path) as conn:  # a second open finds it current
        assert judge_results.results(conn, created.name)["skipped"] == 1


def test_outputs_that_read_the_same_are_left_out_and_counted(conn, run):
    copy = copy_run(run.path, "gen-same")
    zero = [r["prediction"] for r in copy.read_predictions("zero_shot")]
    set_prediction(copy, "finetuned", 1, zero[0])
    set_prediction(copy, "finetuned", 3, "  " + zero[2].replace(" ", "\n ") + " ")  # only whitespace differs
    created = judging.create(conn, copy, "gen-same", "zero_shot", "finetuned")
    assert (created.n_identical, created.n_items) == (2, len(zero) - 2)
    assert 1 not in (kept := [r["line"] for r in conn.execute("SELECT line FROM judge_items")]) and 3 not in kept
    for line in range(1, len(zero) + 1):
        set_prediction(copy, "finetuned", line, zero[line - 1])
    with pytest.raises(UserError, match=f"same output on all {len(zero)} examples; there is nothing to judge"):
        judging.create(conn, copy, "gen-same", "zero_shot", "finetuned")


def test_results_go_into_the_run_and_its_report(conn, run, tmp_path):
    copy = copy_run(run.path, "gen-report")
    first = judging.create(conn, copy, "gen-report", "zero_shot", "finetuned", seed=3)
    second = judging.create(conn, copy, "gen-report", "finetuned", "zero_shot", seed=3)
    for i in range(3):  # "B" shown on every item: system B wins where the item is not flipped
        judging.answer(conn, first.name, "ann", i, "B", "clearer")
    judge_results.write_into_run(conn, first.name)
    judging.answer(conn, first.name, "ann", 3, "tie")
    judge_results.write_into_run(conn, first.name)
    judge_results.write_into_run(conn, second.name)
    body = json.loads(copy.human_eval.read_text())
    assert [r["round"] for r in body["rounds"]] == [first.name, second.name]  # one entry per round, replaced
    entry = body["rounds"][0]
    flips = [judging.flipped(3, i) for i in range(3)]
    assert (entry["answers"], entry["ties"], entry["wins_b"]) == (4, 1, flips.count(False))
    assert entry["system_a"] == "zero_shot" and "bootstrap over items" in entry["interval"]
    report = judge_results.update_report(conn, first.name).read_text()
    assert "Human evaluation: blind A/B judgements" in report and first.name in report
    assert "B&#x27;s win rate over A" in report
    copy.human_eval.unlink()
    assert "Human evaluation" not in write_report(copy.path).read_text()


def test_pairs_are_preference_records_that_data_check_accepts(conn, run, tmp_path):
    created = _round(conn, run, seed=11)
    choices = ["A", "B", "tie", "B", "A", "skip"]
    for i, choice in enumerate(choices):
        judging.answer(conn, created.name, "ann", i, choice, "reason <b>" if i == 1 else "")
    pairs, left_out = judge_results.pairs(conn, created.name)
    assert left_out == {"ties": 1, "skipped": 1, "empty": 0} and len(pairs) == 4
    items = {r["idx"]: r for r in conn.execute("SELECT * FROM judge_items")}
    for pair, i in zip(pairs, [0, 1, 3, 4]):
        shown = judging.shown(items[i])
        assert pair["prompt"] == items[i]["input"] and pair["annotator"] == "ann"
        assert (pair["chosen"], pair["rejected"]) == ((shown["A"], shown["B"]) if choices[i] == "A"
                                                      else (shown["B"], shown["A"]))
    assert pairs[1]["reason"] == "reason <b>" and "reason" not in pairs[0]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    code, output = run_cli("data", "check", path, "--task", "preference")
    assert code == 0 and "4 records, format preference" in output, output


def test_bad_input_is_refused_with_one_clear_message(conn, run):
    with pytest.raises(UserError, match="both 'finetuned'; pick two different systems"):
        judging.create(conn, run, "gen", "finetuned", "finetuned")
    with pytest.raises(UserError, match="no predictions of system 'few_shot'; it has finetuned, zero_shot"):
        judging.create(conn, run, "gen", "few_shot", "finetuned")
    with pytest.raises(UserError, match="round name is 1-80 letters"):
        judging.create(conn, run, "gen", "zero_shot", "finetuned", name="../x")
    created = _round(conn, run, name="mine")
    with pytest.raises(UserError, match="already a round called 'mine'"):
        _round(conn, run, name="mine")
    with pytest.raises(judging.RoundNotFound, match="no judging round called 'nope'"):
        judging.answer(conn, "nope", "ann", 0, "A")
    for index, choice, reason, message in [(0, "C", "", "choice must be A, B or tie .the side as shown. or skip"),
                                           (99, "A", "", "round 'mine' has no item 99"),
                                           ("0", "A", "", "index must be a whole number"),
                                           (0, "A", "x" * 2001, "reason must be text of at most 2000")]:
        with pytest.raises(UserError, match=message):
            judging.answer(conn, created.name, "ann", index, choice, reason)
    assert judging.own_answers(conn, created.name, "ann", history=True) == []
    classification = copy_run(run.path, "gen-labels")
    classification.write_eval({**classification.read_eval(), "task": "classification"})
    with pytest.raises(UserError, match="'gen-labels' is a classification run; blind A/B judging compares free-text"):
        judging.create(conn, classification, "gen-labels", "zero_shot", "finetuned")
    shorter = copy_run(run.path, "gen-short")
    shorter.write_predictions("finetuned", shorter.read_predictions("finetuned")[:-1])
    with pytest.raises(UserError, match="not of the same examples in the same order"):
        judging.create(conn, shorter, "gen-short", "zero_shot", "finetuned")
