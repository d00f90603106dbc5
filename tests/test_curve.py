"""``lmtune curve``: the fit recovers a planted law, bad fractions stop before anything is written, the points are
nested subsets, and a curve killed after its first point continues without training that point again."""

import json
import re

import pytest
from conftest import killed_cli, run_cli
from filelock import FileLock

from lmtune.curve import fit
from lmtune.curve.plan import parse_fractions, plan, point_recipe
from lmtune.recipe import load_recipe
from lmtune.run_dir import checkpoint_dirs

pytestmark = pytest.mark.usefixtures("one_thread")

CURVE_KEYS = {"name", "recipe_sha256", "metric", "system", "higher_is_better", "n_train_total", "fractions",
              "repeats", "points", "baseline", "fit"}
POINT_KEYS = {"fraction", "n_train", "repeat", "run", "state", "value", "ci_low", "ci_high", "seconds"}
FIT_KEYS = {"form", "a", "b", "c", "at_n", "doubling_gain", "doubling_ci", "flattens_at", "flatten_threshold",
            "statement"}


@pytest.fixture
def curve_recipe(recipe_file):
    """The tiny sentiment recipe (36 training examples after the split) with a zero-shot reference."""
    return recipe_file(eval={"systems": ["zero_shot", "finetuned"]})


def planted(a, b, c, sign=1.0, noise=0.003, half_width=0.01, seed=1):
    """Points of a known law at six sizes, two repeats each, with small intervals around each drawn value."""
    import numpy as np

    rng = np.random.default_rng(seed)
    points = []
    for n in (25, 50, 100, 200, 400, 800):
        for _ in range(2):
            y = float(fit.law(n, a, b, c, sign)) + rng.normal(0.0, noise)
            points.append(fit.Measured(n, y, y - half_width, y + half_width))
    return points


@pytest.mark.parametrize("metric, higher, a, b, c", [("f1_macro", True, 0.9, 1.5, 0.5),
                                                     ("mse", False, 0.2, 3.0, 0.7)])
def test_the_fit_recovers_a_planted_law_and_its_interval_holds_the_true_gain(metric, higher, a, b, c):
    sign = 1.0 if higher else -1.0
    found, said = fit.fit(planted(a, b, c, sign), metric, higher, seed=0)
    assert found["a"] == pytest.approx(a, abs=0.02) and found["c"] == pytest.approx(c, abs=0.15)
    assert found["b"] == pytest.approx(b, rel=0.5)
    truth = fit.gain(a, b, c, 800, sign)
    low, high = found["doubling_ci"]
    assert low <= truth <= high and high - low < abs(truth), (truth, found["doubling_ci"])
    assert found["doubling_gain"] == pytest.approx(truth, rel=0.3)
    # Where the fit says the curve flattens, the planted law's doubling gain is about the threshold: 0.01 of
    # macro-F1's range, or of the largest error seen for an unbounded metric.
    threshold = found["flatten_threshold"]
    assert threshold == (0.01 if higher else pytest.approx(0.01 * max(p.value for p in planted(a, b, c, sign))))
    assert found["flattens_at"] > 800
    assert threshold / 2 <= abs(fit.gain(a, b, c, found["flattens_at"], sign)) <= 2 * threshold, found["flattens_at"]
    assert found["form"] == ("a - b * n^-c" if higher else "a + b * n^-c") and found["statement"] == said
    verb, amount = "add" if higher else "lower", abs(found["doubling_gain"])
    assert said.startswith(f"Doubling the 800 training examples is expected to {verb} {amount:.3f} {metric} [")
    assert "beyond the data, at about" in said and "reaches 0" not in said


def test_the_fit_needs_three_sizes_and_says_when_its_interval_reaches_zero():
    two = [fit.Measured(n, 0.5, 0.45, 0.55) for n in (10, 20, 10)]
    assert fit.fit(two, "f1_macro") == (None, fit.fit(two, "f1_macro")[1])
    assert "needs points at 3 or more training-set sizes (2 finished so far)" in fit.fit(two, "f1_macro")[1]
    flat = [fit.Measured(n, 0.5 + d, 0.4 + d, 0.6 + d) for n, d in ((10, 0.01), (20, -0.01), (40, 0.0), (80, 0.0))]
    found, said = fit.fit(flat, "f1_macro", seed=3)
    assert found is not None and found["doubling_ci"][0] < 0.0005
    assert "an interval that reaches 0: these points cannot rule out that more data adds nothing" in said


@pytest.mark.parametrize("text, what", [("0.5,abc", "'abc' is not a number"), ("0,0.5", "0 is not in (0, 1]"),
                                        ("1.5", "1.5 is not in (0, 1]"), (" , ", "no fractions")])
def test_bad_fractions_text_is_one_line_and_exit_2(curve_recipe, tmp_path, text, what):
    out = tmp_path / "curve"
    code, output = run_cli("curve", curve_recipe, "--fractions", text, "--out", out)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: --fractions: ") and what in errors[0], output
    assert "Traceback" not in output and not out.exists()


def test_a_fraction_that_leaves_a_class_empty_names_the_smallest_that_works(curve_recipe, tmp_path):
    out = tmp_path / "curve"
    code, output = run_cli("curve", curve_recipe, "--fractions", "0.05,0.5,1", "--out", out)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in output, output
    found = re.fullmatch(r"error: --fractions: 0\.05 keeps 2 of the 36 training examples, which leaves label '\w+' "
                         r"with no example; the smallest fraction that keeps every label is ([0-9.]+)", errors[0])
    assert found, errors[0]
    assert not out.exists()  # nothing half-written: the check ran before the directory was made
    smallest = float(found.group(1))
    recipe = load_recipe(curve_recipe)
    checked = plan(recipe, [smallest], 1, out)  # the fraction it names works, and 0.01 less does not
    assert checked.points[0].n_train >= 3 and not out.exists()
    code, output = run_cli("curve", curve_recipe, "--fractions", round(smallest - 0.01, 2), "--out", out)
    assert code == 2 and "error: --fractions:" in output


def test_repeats_draw_subsets_with_seeds_and_keep_the_training_seed(curve_recipe, tmp_path):
    checked = plan(load_recipe(curve_recipe), parse_fractions("1,0.5,0.5,0.49"), 2, tmp_path / "curve")
    # 0.49 and 0.5 of 36 both round to 18 examples: one point, trained once, and said so.
    assert checked.fractions == [0.49, 1.0] and checked.n_total == 36
    assert checked.notes == ["--fractions 0.5 and 0.49 both keep 18 of the 36 training examples: trained once"]
    assert [(p.n_train, p.repeat, p.run) for p in checked.points] == [
        (18, 0, "points/n18-r0"), (18, 1, "points/n18-r1"), (36, 0, "points/n36-r0"), (36, 1, "points/n36-r1")]
    assert [p.fraction for p in checked.points] == [0.49, 0.49, 1.0, 1.0]
    recipe = point_recipe(checked, checked.points[1])
    assert recipe.data.subset.size == 18 and recipe.data.subset.seed == 1 and recipe.seed == 0
    assert recipe.eval.systems == ["finetuned"] and recipe.name == "tiny-n18-r1"


def test_another_recipes_curve_and_a_running_curve_are_refused(curve_recipe, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "curve.json").write_text(json.dumps({"recipe_sha256": "0" * 64}))
    code, output = run_cli("curve", curve_recipe, "--out", other)
    assert code == 2 and f"error: {other}: holds the curve of another recipe" in output, output
    busy = tmp_path / "busy"
    busy.mkdir()
    with FileLock(str(busy / "curve.lock")):
        code, output = run_cli("curve", curve_recipe, "--fractions", "1", "--out", busy)
    assert code == 2 and f"error: {busy}: another lmtune curve is running in this directory" in output, output
    assert [p.name for p in busy.iterdir()] == ["curve.lock"]
    # A failure before any point's run holds work (here the model) leaves no curve directory behind.
    fresh = tmp_path / "fresh"
    code, output = run_cli("curve", curve_recipe, "--fractions", "1", "--out", fresh, "--set",
                           f"model={tmp_path / 'missing'}")
    assert code == 2 and f"error: {tmp_path / 'missing'}: no such model" in output and not fresh.exists(), output


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def kill_in_second_point(args, out):
    """Run the curve in a process of its own; once its first point's line is printed, SIGKILL it as soon as the
    second point has saved a whole checkpoint (in the middle of its training; a ``step-N.tmp`` folder being written
    has its ``state.json`` before it is renamed, and a resume does not use it)."""
    def ready(seen):
        return (any(line.startswith("n=9 repeat 0:") for line in seen)
                and bool(checkpoint_dirs(out / "points" / "n18-r0" / "checkpoints", complete=True)))
    return killed_cli(args, ready)


def test_a_curve_killed_after_its_first_point_continues_without_training_it_again(recipe_file, tmp_path):
    out = tmp_path / "curve"
    # 30 steps, a checkpoint every 2: the second point is killed in the middle of its training.
    recipe = recipe_file(eval={"systems": ["zero_shot", "finetuned"]}, training={"max_steps": 30, "eval_every": 2})
    args = ["curve", str(recipe), "--fractions", "0.25,0.5,1", "--out", str(out), "--quiet"]
    seen = kill_in_second_point(args, out)
    assert "zero-shot reference, n=0: f1_macro" in seen, seen
    killed = json.loads((out / "curve.json").read_text())
    assert [p["state"] for p in killed["points"]] == ["finished", "running", "pending"], killed["points"]
    first, zero = out / "points" / "n9-r0", out / "points" / "zero-shot"
    stamps = {run: ((run / "eval.json").stat().st_mtime_ns, json.loads((run / "status.json").read_text()))
              for run in (first, zero)}

    code, output = run_cli(*args)
    assert code == 0, output
    assert re.search(r"^n=9 repeat 0: f1_macro [0-9.]+ \[[0-9.]+, [0-9.]+\], [0-9.]+ s \(finished before, reused\)$",
                     output, re.M), output
    assert "zero-shot reference, n=0: f1_macro" in output and "(finished before, reused)" in output
    for run, (mtime, status) in stamps.items():  # not trained or scored again: same files, one attempt
        assert (run / "eval.json").stat().st_mtime_ns == mtime
        assert json.loads((run / "status.json").read_text()) == status and status["attempts"] == 1
    # The killed point resumed from its checkpoint (a second attempt of the same run), and went on to step 30.
    resumed = json.loads((out / "points" / "n18-r0" / "status.json").read_text())
    assert resumed["state"] == "finished" and resumed["attempts"] == 2
    assert json.loads((out / "points" / "n18-r0" / "eval.json").read_text())["training"]["train_steps"] == 30
    body = json.loads((out / "curve.json").read_text())
    assert CURVE_KEYS <= set(body) and body["name"] == "tiny" and body["metric"] == "f1_macro"
    assert body["system"] == "finetuned" and body["n_train_total"] == 36 and body["fractions"] == [0.25, 0.5, 1.0]
    assert [(p["n_train"], p["run"], p["state"]) for p in body["points"]] == [
        (9, "points/n9-r0", "finished"), (18, "points/n18-r0", "finished"), (36, "points/n36-r0", "finished")]
    for point in body["points"]:
        assert set(point) == POINT_KEYS and point["ci_low"] <= point["value"] <= point["ci_high"]
        run = out / point["run"]
        scored = json.loads((run / "eval.json").read_text())
        assert scored["split"] == "test" and scored["results"]["finetuned"]["f1_macro"] == point["value"]
        assert not (run / "checkpoints").exists() and (run / "final").is_dir()
    assert body["baseline"]["system"] == "zero_shot" and body["baseline"]["value"] is not None
    assert FIT_KEYS <= set(body["fit"]) and body["fit"]["at_n"] == 36 and body["statement"] == body["fit"]["statement"]
    assert body["statement"] in output
    # Nested: each smaller point trained on a subset of the larger one's examples; the largest on all of train.
    trains = [[json.dumps(r, sort_keys=True) for r in lines(out / p["run"] / "data" / "train.jsonl")]
              for p in body["points"]]
    assert [len(t) for t in trains] == [9, 18, 36] and set(trains[0]) < set(trains[1]) < set(trains[2])
    assert sorted({json.loads(r)["label"] for r in trains[0]}) == ["negative", "neutral", "positive"]
    page = (out / "curve.html").read_text()
    assert 'src="data:image/png;base64,' in page and 'href="points/n18-r0/report.html"' in page
    assert body["statement"].split(";")[0] in page
