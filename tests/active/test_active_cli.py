"""``lmtune active`` end to end on tiny models: the queue holds the records with the highest scores (recomputed
here from the model's label log-likelihoods, independently of the active package), its fields are complete, a
run's fitted temperature calibrates the confidence, the committee of a generation task works, and every bad input
stops with one line, exit 2 and no queue written, before any model loads.
"""

import json

import numpy as np
import pytest
import yaml
from conftest import run_cli, sentiment_records, write_jsonl, write_recipe
from scipy.special import log_softmax
from scipy.stats import entropy
from tiny import build_model, build_tokenizer, sharpened

pytestmark = pytest.mark.usefixtures("one_thread")

LABELS = ["negative", "neutral", "positive"]
QUEUE_FIELDS = {"prelabel", "confidence", "score", "strategy", "rank", "pool_line"}


@pytest.fixture(scope="module")
def sharp_dir(tmp_path_factory):
    """A sharpened tiny Llama: its label probabilities differ clearly from one review to the next."""
    root = tmp_path_factory.mktemp("sharp")
    tok = build_tokenizer()
    sharpened(build_model(len(tok))).save_pretrained(root)
    tok.save_pretrained(root)
    return root


@pytest.fixture
def files(tmp_path, sharp_dir):
    """(recipe, pool) on the sharpened model: 30 reviews to train on, a pool of 24 that carry their rating."""
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_records(30))
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"review": f"pool {r['review']}", "rating": r["rating"], "id": i}
                                                 for i, r in enumerate(sentiment_records(24))])
    # fp32: the scores are compared with an fp32 computation (auto would score in bf16 on a CPU that has it)
    return write_recipe(tmp_path / "recipe.yaml", sharp_dir, train, training={"precision": "fp32"}), pool


def independent_entropy(model_dir, pool):
    """Each pool record's label entropy, computed from ``completion_logprobs`` (one padded row per label)."""
    from lmtune.data.encode import Encoder
    from lmtune.data.formats import Example
    from lmtune.data.templates import TEMPLATES, render
    from lmtune.inference.scoring import completion_logprobs
    from lmtune.models import load_causal_lm

    model, tok, _ = load_causal_lm(str(model_dir))
    encoder = Encoder(tok, 64, True)
    records = [json.loads(line) for line in pool.read_text().splitlines()]
    prompts = [encoder.prompt_ids(render(TEMPLATES["sentiment"], Example({"text": r["review"], "label": ""}, "p",
                                                                         "classification"), LABELS).messages)
               for r in records]
    pairs = [(p, encoder.target_ids(label)) for p in prompts for label in LABELS]
    scores = np.array(completion_logprobs(model, pairs, tok.pad_token_id, quiet=True)).reshape(len(records), 3)
    probs = np.exp(log_softmax(scores, axis=1))
    return entropy(probs, axis=1), probs


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_queue_holds_the_highest_entropy_records_with_every_field(files, sharp_dir, tmp_path):
    recipe, pool = files
    out = tmp_path / "queue.jsonl"
    code, output = run_cli("active", recipe, "--pool", pool, "--budget", 5, "--out", out, "--quiet")
    assert code == 0, output
    # The pool's ratings are not used without --oracle: said once, and gone from the queue.
    assert output.count("24 pool records carry a label; it is ignored (use --oracle FIELD") == 1
    queue = read(out)
    truth, probs = independent_entropy(sharp_dir, pool)
    expected = np.argsort(-truth)[:5]
    assert [q["id"] for q in queue] == expected.tolist()  # the top 5, best first
    assert truth[expected[4]] > truth[np.argsort(-truth)[5]] + 1e-4  # a clear gap: the pick is not a near-tie
    for rank, q in enumerate(queue, start=1):
        assert set(q) == {"review", "id"} | QUEUE_FIELDS
        assert q["rank"] == rank and q["strategy"] == "entropy" and q["pool_line"] == q["id"] + 1
        assert q["score"] == pytest.approx(truth[q["id"]], abs=1e-4)
        assert q["prelabel"] == LABELS[int(probs[q["id"]].argmax())]
        assert q["confidence"] == pytest.approx(probs[q["id"]].max(), abs=1e-3)
    assert "pool: 24 records; scored 24" in output and "examples/s" in output
    assert "selected 5 by entropy" in output and "confidence uncalibrated" in output


@pytest.mark.parametrize("strategy", ["margin", "least_confidence", "diverse", "committee", "random"])
def test_every_strategy_writes_a_queue_of_distinct_records_sorted_by_score(files, tmp_path, strategy):
    recipe, pool = files
    out = tmp_path / "queue.jsonl"
    code, output = run_cli("active", recipe, "--pool", pool, "--budget", 4, "--strategy", strategy, "--out", out,
                           "--quiet")
    assert code == 0, output
    queue = read(out)
    assert len({q["id"] for q in queue}) == 4 and all(q["strategy"] == strategy for q in queue)
    if strategy != "diverse":  # diverse orders its picks by uncertainty too, but picks one per cluster
        assert [q["score"] for q in queue] == sorted((q["score"] for q in queue), reverse=True)
    assert f"pool: 24 records; scored {4 if strategy == 'random' else 24}" in output
    if strategy == "committee":
        assert "x 2 systems" in output  # zero-shot and few-shot, without a run


def test_a_run_scores_the_pool_with_its_fitted_temperature(files, tmp_path):
    recipe, pool = files
    raw = yaml.safe_load(recipe.read_text())
    raw["eval"] = {"systems": ["finetuned"], "calibrate": "temperature"}
    recipe.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    code, output = run_cli("train", recipe, "--out", run, "--set", "training.max_steps=2")
    assert code == 0, output
    temperature = json.loads((run / "eval.json").read_text())["results"]["finetuned"]["temperature"]
    out = tmp_path / "queue.jsonl"
    code, output = run_cli("active", recipe, "--pool", pool, "--budget", 3, "--run", run, "--out", out, "--quiet")
    assert code == 0, output
    assert f"pre-labels by finetuned, confidence calibrated (temperature {temperature:.3f}" in output
    assert len(read(out)) == 3
    # Pool records the run trained on (here in other case and spacing) are labelled already: never selected.
    trained = [r["text"] for r in read(run / "data" / "train.jsonl")][:2]
    both = write_jsonl(tmp_path / "both.jsonl", read(pool) + [{"review": "  " + t.upper(), "rating": "positive"}
                                                              for t in trained])
    code, output = run_cli("active", recipe, "--pool", both, "--budget", 24, "--run", run, "--out", out, "--quiet")
    assert code == 0, output
    assert "warning: left out 2 pool records the run trained on" in output and "; 24 remain" in output
    assert sorted(r["id"] for r in read(out)) == list(range(24))
    code, output = run_cli("active", recipe, "--pool", both, "--budget", 25, "--run", run, "--out", out, "--quiet")
    assert code == 2 and "the pool holds only 24 records" in output
    # A run of another task is refused before anything loads.
    raw["task"]["labels"] = ["bad", "good"]
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(raw))
    code, output = run_cli("active", other, "--pool", pool, "--budget", 3, "--run", run, "--out", tmp_path / "x")
    assert code == 2 and "error: --run: the run was trained on another task (task.labels" in output
    assert not (tmp_path / "x").exists()


def test_committee_of_a_generation_task_scores_disagreement_of_outputs(tmp_path, tiny_model_dir):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": r["review"], "completion": r["rating"]}
                                                   for r in sentiment_records(12)])
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"prompt": f"pool {r['review']}"} for r in sentiment_records(8)])
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_model_dir, train,
                          task={"type": "generation", "labels": None, "template": "completion"},
                          data={"fields": {}}, eval={"systems": ["zero_shot", "few_shot"], "max_new_tokens": 4})
    out = tmp_path / "queue.jsonl"
    code, output = run_cli("active", recipe, "--pool", pool, "--budget", 3, "--strategy", "committee", "--out", out,
                           "--quiet")
    assert code == 0, output
    queue = read(out)
    assert len(queue) == 3 and all(q["confidence"] is None and isinstance(q["prelabel"], str) for q in queue)
    assert all(0.0 <= q["score"] <= 1.0 for q in queue)
    assert "no confidence (generated text" in output


def bad(tmp_path, sharp_dir):
    """A recipe on a model that does not exist: an input checked before any model loads fails first."""
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_records(30))
    recipe = write_recipe(tmp_path / "recipe.yaml", tmp_path / "no-such-model", train)
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"review": r["review"]} for r in sentiment_records(6)])
    return recipe, pool


CASES = {
    "empty pool": (lambda d, p: ["--pool", _write(d / "empty.jsonl", "")], "empty.jsonl: file is empty"),
    "malformed line": (lambda d, p: ["--pool", _write(d / "broken.jsonl", '{"review": "fine"}\n{"review": \n')],
                       "broken.jsonl:2: not valid JSON"),
    "record without the text": (lambda d, p: ["--pool", _write(d / "odd.jsonl", '{"review": "a"}\n{"body": "b"}\n')],
                                "odd.jsonl:2: column 'review' (data.fields.text) is missing"),
    "budget zero": (lambda d, p: ["--budget", "0"], "--budget: is 0; select at least 1 record"),
    "budget over the pool": (lambda d, p: ["--budget", "7"], "--budget: is 7 but the pool holds only 6 records"),
    "unknown strategy": (lambda d, p: ["--strategy", "entropyy"],
                         "--strategy: unknown strategy 'entropyy'; choose from entropy, margin, least_confidence, "
                         "committee, diverse, random"),
    "oracle option alone": (lambda d, p: ["--rounds", "2"], "--rounds: applies to the oracle experiment only"),
    "not a run": (lambda d, p: ["--run", str(d)], "--run: not a finished run of lmtune train"),
    "run with oracle": (lambda d, p: ["--oracle", "rating", "--run", str(d)],
                        "--run: the oracle experiment trains its own model every round"),
}


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_no_queue(tmp_path, sharp_dir, case):
    recipe, pool = bad(tmp_path, sharp_dir)
    extra, expected = CASES[case]
    args = {"--pool": str(pool), "--budget": "2", **dict(zip(*[iter(extra(tmp_path, pool))] * 2))}
    out = tmp_path / "queue" / "q.jsonl"
    code, output = run_cli("active", recipe, *[x for kv in args.items() for x in kv], "--out", out)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and lines == [lines[0]] and lines[0].startswith("error: "), output
    assert expected in lines[0]
    assert not (tmp_path / "queue").exists()


def test_a_probability_strategy_on_a_generation_task_names_the_ones_that_work(tmp_path, tiny_model_dir):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "completion": "b"}] * 4)
    pool = write_jsonl(tmp_path / "pool.jsonl", [{"prompt": "c"}])
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_model_dir, train,
                          task={"type": "generation", "labels": None, "template": "completion"}, data={"fields": {}})
    code, output = run_cli("active", recipe, "--pool", pool, "--budget", 1, "--strategy", "margin",
                           "--out", tmp_path / "q.jsonl")
    assert code == 2 and output.strip() == ("error: --strategy: margin needs label probabilities and a generation task "
                                            "answers with free text; on a generation task use committee or random")
    assert not (tmp_path / "q.jsonl").exists()
