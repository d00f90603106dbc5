"""Evaluation systems (``lmtune.evaluate.systems``) on one test split: BM25 few-shot, RAG, fine-tuned + RAG,
another model; their costs, intervals and paired tests; the token cap count of generation systems."""

import json

import pytest
from conftest import run_cli, sentiment_records, write_jsonl, write_recipe


@pytest.fixture(scope="module")
def all_systems(tmp_path_factory, tiny_model_dir):
    """``(run directory, train output, model dir)``: one run of every kind of system, with prices."""
    tmp_path = tmp_path_factory.mktemp("all-systems")
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [
        {"text": "reviews that say great or loved are positive"},
        {"text": "reviews that say terrible, boring or awful are negative"},
        {"text": "reviews that say fine or nothing special are neutral"}])
    reviews = write_jsonl(tmp_path / "reviews.jsonl", sentiment_records())
    path = write_recipe(tmp_path / "recipe.yaml", tiny_model_dir, reviews,
                        eval={"systems": ["zero_shot", "few_shot", "rag", f"model:{tiny_model_dir}", "finetuned",
                                          "finetuned+rag"],
                              "few_shot_k": 2, "few_shot_selection": "bm25",
                              "rag": {"corpus": str(corpus), "top_k": 2},
                              "cost": {"prompt_per_1k_tokens": 1.0, "completion_per_1k_tokens": 2.0,
                                       "training_per_1k_tokens": 3.0}})
    out = tmp_path / "run"
    code, output = run_cli("train", path, "--out", out, "--quiet")
    assert code == 0, output
    return out, output, tiny_model_dir


def test_all_systems_run_on_the_same_test_split(all_systems):
    out, _, tiny_model_dir = all_systems
    results = json.loads((out / "eval.json").read_text())["results"]
    assert set(results) == {"zero_shot", "few_shot", "rag", f"model:{tiny_model_dir}", "finetuned", "finetuned+rag"}


def test_costs_are_the_token_means_at_the_recipe_prices(all_systems):
    body = json.loads((all_systems[0] / "eval.json").read_text())
    for name, r in body["results"].items():
        want = r["prompt_tokens_mean"] * 1.0 + r["completion_tokens_mean"] * 2.0
        assert r["cost_per_1k_queries"] == pytest.approx(want, rel=1e-4), name
    training = body["training"]
    assert training["training_cost"] == pytest.approx(training["training_tokens"] / 1000 * 3.0, rel=1e-4)


def test_retrieved_passages_and_shots_make_longer_prompts(all_systems):
    results = json.loads((all_systems[0] / "eval.json").read_text())["results"]
    # Retrieved passages and shots make longer prompts, and so cost more per query.
    assert results["rag"]["prompt_tokens_mean"] > results["zero_shot"]["prompt_tokens_mean"]
    assert results["finetuned+rag"]["prompt_tokens_mean"] == pytest.approx(results["rag"]["prompt_tokens_mean"])
    assert results["few_shot"]["prompt_tokens_mean"] > results["zero_shot"]["prompt_tokens_mean"]


def test_another_model_with_the_base_weights_scores_like_zero_shot(all_systems):
    _, _, tiny_model_dir = all_systems
    results = json.loads((all_systems[0] / "eval.json").read_text())["results"]
    assert results[f"model:{tiny_model_dir}"]["f1_macro"] == pytest.approx(results["zero_shot"]["f1_macro"])


def test_every_metric_lies_in_its_bootstrap_interval(all_systems):
    results = json.loads((all_systems[0] / "eval.json").read_text())["results"]
    for name, r in results.items():  # every metric with its bootstrap interval around it
        low, high = r["ci"]["f1_macro"]
        assert low <= r["f1_macro"] <= high, name


def test_the_winner_is_paired_with_every_other_system(all_systems):
    body = json.loads((all_systems[0] / "eval.json").read_text())
    results = body["results"]
    winner = body["significance"][0]["a"]
    assert {s["b"] for s in body["significance"]} == set(results) - {winner}
    assert all(0.0 <= s["p_value"] <= 1.0 for s in body["significance"])


def test_the_report_and_a_comparison_show_every_system(all_systems, tmp_path):
    out = all_systems[0]
    report = (out / "report.html").read_text()
    assert "Verdict: was fine-tuning worth it?" in report and "per 1,000 queries" in report
    code, output = run_cli("compare", out, out, "--out", tmp_path / "cmp.html")
    assert code == 0, output
    page = (tmp_path / "cmp.html").read_text()
    assert page.count("finetuned+rag") >= 2 and "<img" in page


def test_eval_metrics_choose_what_gets_intervals(recipe_file, tmp_path):
    path = recipe_file(eval={"systems": ["zero_shot", "finetuned"], "metrics": ["accuracy", "f1_micro"]})
    out = tmp_path / "run"
    code, output = run_cli("train", path, "--out", out, "--quiet")
    assert code == 0, output
    for result in json.loads((out / "eval.json").read_text())["results"].values():
        assert set(result["ci"]) == {"accuracy", "f1_micro"}
        assert result["ci"]["f1_micro"][0] <= result["f1_micro"] <= result["ci"]["f1_micro"][1]


MAX = 20


def _generation_spec(**controls):
    from lmtune.data.templates import TEMPLATES
    from lmtune.evaluate import systems
    from lmtune.recipe import GenerationConfig

    return systems.TaskSpec("generation", None, TEMPLATES["completion"], max_new_tokens=MAX, batch_size=2,
                              generation=GenerationConfig(**controls))


def test_system_metrics_count_outputs_that_hit_the_token_cap(setup):
    from lmtune.data.formats import Example
    from lmtune.evaluate import systems

    tok, model, enc = setup
    test = [Example({"prompt": p, "completion": "fine"}, "t", "completion")
            for p in ["the movie was great", "it was fine", "this drug helped my pain"]]
    plain = systems.run_system(model, tok, enc, _generation_spec(), test, quiet=True)
    assert plain.metrics["hit_token_cap"] == 3
    stop = plain.predictions[0]["prediction"][1:3]
    stopped = systems.run_system(model, tok, enc, _generation_spec(stop=[stop]), test, quiet=True)
    hits = sum(stop not in p["prediction"] and len(p["prediction"]) == len(q["prediction"])
               for p, q in zip(stopped.predictions, plain.predictions))
    assert stopped.metrics["hit_token_cap"] == hits < 3
    assert stop not in stopped.predictions[0]["prediction"]
