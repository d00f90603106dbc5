"""Evaluation systems on one test split: BM25 few-shot, RAG, fine-tuned + RAG, another model; costs."""

import json
import re

import pytest
from conftest import run_cli, write_jsonl


def test_all_systems_run_on_the_same_test_split_with_costs(recipe_file, tiny_model_dir, tmp_path):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [
        {"text": "reviews that say great or loved are positive"},
        {"text": "reviews that say terrible, boring or awful are negative"},
        {"text": "reviews that say fine or nothing special are neutral"}])
    path = recipe_file(eval={"systems": ["zero_shot", "few_shot", "rag", f"model:{tiny_model_dir}", "finetuned",
                                         "finetuned+rag"],
                             "few_shot_k": 2, "few_shot_selection": "bm25",
                             "rag": {"corpus": str(corpus), "top_k": 2},
                             "cost": {"prompt_per_1k_tokens": 1.0, "completion_per_1k_tokens": 2.0,
                                      "training_per_1k_tokens": 3.0}})
    out = tmp_path / "run"
    code, output = run_cli("train", path, "--out", out, "--quiet")
    assert code == 0, output
    body = json.loads((out / "eval.json").read_text())
    results = body["results"]
    assert set(results) == {"zero_shot", "few_shot", "rag", f"model:{tiny_model_dir}", "finetuned", "finetuned+rag"}
    for name, r in results.items():
        want = r["prompt_tokens_mean"] * 1.0 + r["completion_tokens_mean"] * 2.0
        assert r["cost_per_1k_queries"] == pytest.approx(want, rel=1e-4), name
    # Retrieved passages and shots make longer prompts, and so cost more per query.
    assert results["rag"]["prompt_tokens_mean"] > results["zero_shot"]["prompt_tokens_mean"]
    assert results["finetuned+rag"]["prompt_tokens_mean"] == pytest.approx(results["rag"]["prompt_tokens_mean"])
    assert results["few_shot"]["prompt_tokens_mean"] > results["zero_shot"]["prompt_tokens_mean"]
    # Another model with the same weights as the base scores exactly like zero-shot.
    assert results[f"model:{tiny_model_dir}"]["f1_macro"] == pytest.approx(results["zero_shot"]["f1_macro"])
    training = body["training"]
    assert training["training_cost"] == pytest.approx(training["training_tokens"] / 1000 * 3.0, rel=1e-4)
    for name, r in results.items():  # every metric with its bootstrap interval around it
        low, high = r["ci"]["f1_macro"]
        assert low <= r["f1_macro"] <= high, name
    winner = body["significance"][0]["a"]
    assert {s["b"] for s in body["significance"]} == set(results) - {winner}
    assert all(0.0 <= s["p_value"] <= 1.0 for s in body["significance"])

    report = (out / "report.html").read_text()
    assert "Verdict: was fine-tuning worth it?" in report and "per 1,000 queries" in report
    code, output = run_cli("compare", out, out, "--out", tmp_path / "cmp.html")
    assert code == 0, output
    page = (tmp_path / "cmp.html").read_text()
    assert page.count("finetuned+rag") >= 2 and "<img" in page


def test_verdict_names_the_winner_its_significance_and_cost():
    from lmtune.report.verdict import verdict_sentences

    evaluation = {"results": {
        "zero_shot": {"f1_macro": 0.2, "cost_per_1k_queries": 0.05, "prompt_tokens_mean": 120,
                      "completion_tokens_mean": 2},
        "few_shot": {"f1_macro": 0.4, "cost_per_1k_queries": 0.25, "prompt_tokens_mean": 760,
                     "completion_tokens_mean": 2},
        "finetuned": {"f1_macro": 0.55, "ci": {"f1_macro": [0.5, 0.6]}, "cost_per_1k_queries": 0.05,
                      "prompt_tokens_mean": 120, "completion_tokens_mean": 2, "latency_s": 0.2}},
        "significance": [{"a": "finetuned", "b": "few_shot", "metric": "f1_macro", "p_value": 0.002}],
        "training": {"training_cost": 1.0, "training_tokens": 300000, "training_wall_s": 600}}
    text = " ".join(verdict_sentences(evaluation, "f1_macro"))
    assert "finetuned wins on f1_macro: 0.55 (95% CI 0.5 to 0.6)" in text
    assert "few_shot (0.4), is significant (paired bootstrap p = 0.002)" in text
    # few_shot is significantly worse (p = 0.002): no break-even against it, and the page says why.
    assert "no other system is of comparable quality" in text and "pays for itself" not in text
    # Of comparable quality (p >= 0.05): 0.2 less per 1,000 queries, training (1.0) pays after 5,000 queries.
    evaluation["significance"][0]["p_value"] = 0.3
    assert "pays for itself after 5,000 queries" in " ".join(verdict_sentences(evaluation, "f1_macro"))
    evaluation["results"]["few_shot"]["f1_macro"] = 0.9
    assert "did not beat" in " ".join(verdict_sentences(evaluation, "f1_macro"))


def test_compare_refuses_a_directory_without_eval_json(tmp_path):
    code, output = run_cli("compare", tmp_path, "--out", tmp_path / "c.html")
    assert code == 2 and "no eval.json" in output


def test_bm25_shots_are_the_most_similar_training_examples():
    from lmtune.data.formats import Example
    from lmtune.evaluate.retrieval import similar_shots

    train = [Example({"text": t, "label": "x"}, f"f:{i}", "classification") for i, t in
             enumerate(["aspirin cured my headache", "the hotel room was clean", "ibuprofen for back pain"])]
    test = [Example({"text": "my headache after aspirin", "label": "x"}, "t:1", "classification")]
    shots = similar_shots(train, test, 2)
    assert shots[0][0].record["text"] == "aspirin cured my headache"


def test_rag_without_a_corpus_and_unknown_systems_are_recipe_errors(recipe_file, tmp_path):
    code, output = run_cli("train", recipe_file(eval={"systems": ["rag"]}), "--out", tmp_path / "a")
    assert code == 2 and "eval.rag" in output
    code, output = run_cli("train", recipe_file(eval={"systems": ["zero_shot", "retrieval"]}), "--out", tmp_path / "b")
    assert code == 2 and "unknown system 'retrieval'" in output


def test_bias_check_reports_flip_rate_per_system(recipe_file, tmp_path):
    rows = [{"review": f"{'he' if i % 2 else 'she'} said the movie was {'great' if i % 3 else 'terrible'} #{i}",
             "rating": "positive" if i % 3 else "negative"} for i in range(40)]
    data = write_jsonl(tmp_path / "g.jsonl", rows)
    path = recipe_file(task={"labels": ["negative", "positive"]}, data={"train": str(data)},
                       eval={"systems": ["zero_shot", "finetuned"], "bias": {"terms": "gender"}})
    out = tmp_path / "run"
    code, output = run_cli("train", path, "--out", out, "--quiet")
    assert code == 0, output
    body = json.loads((out / "eval.json").read_text())
    assert set(body["bias"]) == {"zero_shot", "finetuned"}
    for report in body["bias"].values():
        assert report["n_tested"] == body["n"]  # every test input has he or she
        assert 0.0 <= report["flip_rate"] <= 1.0
        assert set(report["by_group"]) >= {"male", "female"}
    assert "Bias check" in (out / "report.html").read_text()


def test_forgetting_probes_and_replay_end_to_end(recipe_file, tmp_path):
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": f"this drug helped my pain a lot and it was fine {i}"}
                                                      for i in range(30)])
    mcq = write_jsonl(tmp_path / "mcq.jsonl", [{"question": f"what is the sentiment of this review {i}",
                                               "choices": ["positive", "negative"], "answer": "A"} for i in range(6)])
    path = recipe_file(eval={"systems": ["finetuned"], "forgetting": {"data": [str(general), str(mcq)]}},
                       training={"replay": {"data": str(general), "ratio": 0.25}})
    out = tmp_path / "run"
    code, output = run_cli("train", path, "--out", out, "--quiet")
    assert code == 0, output
    forgetting = json.loads((out / "eval.json").read_text())["forgetting"]
    assert set(forgetting["change"]) == {"general", "mcq"}
    assert forgetting["base"]["general"]["kind"] == "perplexity"
    assert forgetting["finetuned"]["mcq"]["n"] == 6
    change = forgetting["change"]["general"]
    assert change["change"] == pytest.approx(change["after"] - change["before"])
    assert "Forgetting: general ability" in (out / "report.html").read_text()
    # The console names each probe's change with its paired interval; 6 questions still get one.
    assert "p_value" in forgetting["change"]["mcq"]
    assert re.search(r"forgetting: general perplexity [\d.]+ -> [\d.]+ \([+-][\d.]+%\), 95% CI of the change", output)
    assert "verdict: finetuned wins" in output
    # The replayed blocks joined training: 25% of the training examples are general text.
    n_train = sum(1 for _ in open(out / "data" / "train.jsonl"))
    replayed = json.loads((out / "eval.json").read_text())["training"]["replay_examples"]
    assert replayed == round(0.25 / 0.75 * n_train) and replayed > 0


def test_replay_on_a_head_task_is_a_clear_error(recipe_file, tmp_path):
    general = write_jsonl(tmp_path / "general.jsonl", [{"text": "general text"}])
    path = recipe_file(task={"head": True}, training={"replay": {"data": str(general), "ratio": 0.2}},
                       eval={"systems": ["majority", "finetuned"]})
    code, output = run_cli("train", path, "--out", tmp_path / "x")
    assert code == 2 and "training.replay" in output


def test_eval_metrics_choose_what_gets_intervals(recipe_file, tmp_path):
    path = recipe_file(eval={"systems": ["zero_shot", "finetuned"], "metrics": ["accuracy", "f1_micro"]})
    out = tmp_path / "run"
    code, output = run_cli("train", path, "--out", out, "--quiet")
    assert code == 0, output
    for result in json.loads((out / "eval.json").read_text())["results"].values():
        assert set(result["ci"]) == {"accuracy", "f1_micro"}
        assert result["ci"]["f1_micro"][0] <= result["f1_micro"] <= result["ci"]["f1_micro"][1]
