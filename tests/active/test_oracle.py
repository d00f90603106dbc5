"""The oracle experiment of ``lmtune active --oracle`` on the tiny model: rounds of select, label from the hidden
field, retrain from scratch; ``active.json`` complete; a killed experiment resumes without retraining what
finished; bad input stops before anything is written.
"""

import json

import pytest
from conftest import killed_cli, run_cli, sentiment_records, write_jsonl, write_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

KEYS = {"name", "recipe_sha256", "metric", "higher_is_better", "strategies", "seeds", "budget", "initial", "rounds",
        "start", "pool_size", "arms", "curves", "labels_to_reach", "target", "statement"}
ROUND_KEYS = {"round", "n_labelled", "value", "ci_low", "ci_high", "run", "state", "seconds", "selected_score_mean"}


@pytest.fixture
def experiment(tmp_path, tiny_model_dir):
    """(recipe, pool, out): a fixed test file of 12 reviews, a pool of 24 whose true rating hides in ``gold``."""
    reviews = sentiment_records(36)
    train = write_jsonl(tmp_path / "train.jsonl", reviews[:6])  # replaced by each round's labelled set
    test = write_jsonl(tmp_path / "test.jsonl", reviews[24:])
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"review": f"pool {r['review']}", "gold": r["rating"]}
                                                 for r in reviews[:24]])
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_model_dir, train,
                          data={"test": str(test), "split": {"validation": 0.0, "test": 0.0}},
                          training={"max_steps": 2, "eval_every": None},
                          eval={"systems": ["zero_shot", "finetuned"]})
    return recipe, pool, tmp_path / "exp"


def args(recipe, pool, out, *more):
    return ["active", str(recipe), "--pool", str(pool), "--budget", "4", "--oracle", "gold", "--rounds", "2",
            "--strategies", "entropy,random", "--out", str(out), "--quiet", *map(str, more)]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_strategies_two_rounds_label_from_the_oracle_and_train_on_what_was_selected(experiment):
    recipe, pool, out = experiment
    code, output = run_cli(*args(recipe, pool, out))
    assert code == 0, output
    body = json.loads((out / "active.json").read_text())
    assert KEYS <= set(body) and body["start"] == "scratch" and body["pool_size"] == 24
    assert (body["strategies"], body["seeds"], body["budget"], body["initial"], body["rounds"]) == (
        ["entropy", "random"], [0], 4, 4, 2)
    gold = {i + 1: r["gold"] for i, r in enumerate(lines(pool))}  # pool line -> hidden rating
    texts = {r["review"]: r["gold"] for r in lines(pool)}
    initial = lines(out / "initial-s0" / "labelled-0.jsonl")
    for arm in body["arms"]:
        rounds = arm["rounds"]
        assert [set(r) >= ROUND_KEYS for r in rounds] == [True, True]
        assert [r["state"] for r in rounds] == ["finished", "finished"]
        assert [r["n_labelled"] for r in rounds] == [4, 8]  # grows by the budget
        assert rounds[0]["run"] == "initial-s0/round-0" and rounds[1]["run"] == f"{arm['strategy']}-s0/round-1"
        assert all(isinstance(r["value"], float) and r["ci_low"] <= r["value"] <= r["ci_high"] for r in rounds)
        # Round 1 trained on round 0's records plus 4 it selected from the rest, labelled from the hidden field.
        labelled = lines(out / f"{arm['strategy']}-s0" / "labelled-1.jsonl")
        assert labelled[:4] == initial and len(labelled) == 8
        picked = rounds[1]["selected_lines"]
        assert len(set(picked)) == 4 and not set(picked) & set(rounds[0]["selected_lines"])
        assert [r["rating"] for r in labelled[4:]] == [gold[line] for line in picked]
        assert all(set(r) == {"review", "rating"} and r["rating"] == texts[r["review"]] for r in labelled)
        assert isinstance(rounds[1]["selected_score_mean"], float)
    runs = [out / "initial-s0" / "round-0", out / "entropy-s0" / "round-1", out / "random-s0" / "round-1"]
    tests = {(run / "data" / "test.jsonl").read_text() for run in runs}
    assert len(tests) == 1  # one fixed test set for every round and arm
    for run in runs:
        assert set(json.loads((run / "eval.json").read_text())["results"]) == {"finetuned"}
        assert len(lines(run / "data" / "train.jsonl")) <= (4 if run.name == "round-0" else 8)
    assert [p["n_labelled"] for p in body["curves"]["entropy"]] == [4, 8]
    assert body["target"]["strategy"] == "random" and body["target"]["n_labelled"] == 8
    assert set(body["labels_to_reach"]) == {"entropy", "random"} and body["statement"] in output
    page = (out / "active.html").read_text()
    assert 'src="data:image/png;base64,' in page and "entropy-s0/round-1/report.html" in page


def test_a_killed_experiment_resumes_without_retraining_the_finished_rounds(experiment):
    recipe, pool, out = experiment
    status = out / "initial-s0" / "round-0" / "status.json"

    def ready(_seen):
        return status.is_file() and json.loads(status.read_text() or "{}").get("state") == "finished"
    killed_cli(args(recipe, pool, out), ready)
    before = json.loads(status.read_text())
    mtime = status.stat().st_mtime_ns
    code, output = run_cli(*args(recipe, pool, out))
    assert code == 0, output
    assert "initial-s0 round 0: 4 labelled" in output and "(reused)" in output.split("initial-s0 round 0")[1][:80]
    after = json.loads(status.read_text())
    assert after["attempts"] == before["attempts"] == 1 and status.stat().st_mtime_ns == mtime  # not retrained
    body = json.loads((out / "active.json").read_text())
    assert all(r["state"] == "finished" for arm in body["arms"] for r in arm["rounds"])
    assert body["target"] is not None


def test_the_oracle_experiment_needs_a_fixed_test_file(experiment, tmp_path, tiny_model_dir):
    _, pool, out = experiment
    recipe = write_recipe(tmp_path / "split.yaml", tiny_model_dir, tmp_path / "train.jsonl")
    code, output = run_cli(*args(recipe, pool, out))
    assert code == 2 and output.strip() == ("error: data.test: the oracle experiment needs a fixed test file: every "
                                            "round of every arm is measured on the same test records; give "
                                            "data.test: FILE")
    assert not out.exists()


@pytest.mark.parametrize("records, expected", [
    ([{"review": "fine", "gold": "neutral"}, {"review": "ok"}], "pool.jsonl:2: no value in field 'gold'"),
    ([{"review": "fine", "gold": "meh"}], "pool.jsonl:1: label 'meh' is not one of task.labels"),
    ([{"review": f"r{i}", "gold": "neutral"} for i in range(7)],
     "--budget: --initial 4 + 1 later rounds x --budget 4 = 8 records, but the pool holds only 7"),
])
def test_bad_oracle_input_stops_before_anything_is_written(experiment, tmp_path, records, expected):
    recipe, _, out = experiment
    pool = write_jsonl(tmp_path / "pool.jsonl", records)
    code, output = run_cli(*args(recipe, pool, out))
    assert code == 2 and len(output.strip().splitlines()) == 1 and expected in output, output
    assert not out.exists()


def test_a_directory_of_another_experiment_is_refused(experiment):
    recipe, pool, out = experiment
    out.mkdir()
    (out / "active.json").write_text(json.dumps({"recipe_sha256": "0" * 64, "settings_sha256": "0" * 64}))
    code, output = run_cli(*args(recipe, pool, out))
    assert code == 2 and "holds an experiment with another recipe" in output
    assert sorted(p.name for p in out.iterdir()) == ["active.json"]
