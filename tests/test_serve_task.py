"""A run served as trained: ``<run>:task`` takes the raw input and answers as evaluation did.

One server holds a generation run and a classification run, two LoRA adapters on the tiny base (the
generation run is loaded first, so its adapter is the active one unless serving picks the other).
Every test input of the classification run, sent to its task model, must get the label its
``predictions/finetuned.jsonl`` (what ``eval.json`` scored) holds, with the softmax of the label
scores evaluation saved as probabilities; the generation run's task model must return evaluation's
greedy outputs.
"""

import json
import math

import httpx2 as httpx
import openai
import pytest
from conftest import sentiment_records, write_jsonl

from lmtune.serve.http.server import Server

KEY = "sk-task"
# Two tokens each for the tiny tokenizer ("negative" and "neutral" would share their first two).
LABELS = {"negative": "awful", "neutral": "fine", "positive": "great"}
TOPICS = {"negative": "complaint", "neutral": "note", "positive": "praise"}


def train(out, model_dir, records, task: dict, steps: int, lr: float, **sections):
    from lmtune.lifecycle import run_recipe
    from lmtune.recipe import recipe_from_dict

    recipe = {"name": out.name, "seed": 0, "model": str(model_dir), "task": task,
              "data": {"train": str(records), "split": {"validation": 0.0, "test": 0.3}, **sections.pop("data", {})},
              "method": {"name": "lora", "peft": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0}},
              # fp32 as the server below: evaluation and serving then agree to float rounding
              "training": {"max_steps": steps, "batch_size": 4, "learning_rate": lr, "max_length": 128,
                           "precision": "fp32"},
              "eval": {"systems": ["finetuned"], **sections.pop("eval", {})}}
    return run_recipe(recipe_from_dict(recipe), out=out, quiet=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("task-runs")
    reviews = write_jsonl(root / "reviews.jsonl", [{**r, "rating": LABELS[r["rating"]]} for r in sentiment_records()])
    notes = write_jsonl(root / "notes.jsonl", [{"prompt": r["review"], "topic": TOPICS[r["rating"]],
                                                "completion": LABELS[r["rating"]]} for r in sentiment_records(20)])
    template = {"system": "You answer in one word.", "prompt": "Topic: {topic}\n\n{prompt}"}
    return {
        # 40 steps at a high rate: the tiny model's predictions differ between inputs (asserted below)
        "reviews": train(root / "reviews", tiny_model_dir, reviews,
                         {"type": "classification", "labels": sorted(LABELS.values()), "template": "classification"},
                         40, 0.1, data={"fields": {"text": "review", "label": "rating"}}),
        "notes": train(root / "notes", tiny_model_dir, notes, {"type": "generation", "template": template}, 4, 0.05,
                       eval={"max_new_tokens": 6}),
    }


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    srv = Server([str(runs["notes"]), str(runs["reviews"])], port=0, api_key=KEY, precision="fp32", quiet=True,
                 state_dir=tmp_path_factory.mktemp("task-state")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def evaluated(run) -> list[tuple[dict, dict]]:
    """(test record, its line of predictions/finetuned.jsonl) pairs: the inputs and what evaluation answered."""
    test = [json.loads(line) for line in (run / "data" / "test.jsonl").read_text().splitlines()]
    predicted = [json.loads(line) for line in (run / "predictions" / "finetuned.jsonl").read_text().splitlines()]
    assert len(test) == len(predicted) == json.loads((run / "eval.json").read_text())["n"]
    return list(zip(test, predicted))


def log_softmax(scores: dict[str, float]) -> dict[str, float]:
    top = max(scores.values())
    norm = top + math.log(sum(math.exp(s - top) for s in scores.values()))
    return {label: s - norm for label, s in scores.items()}


def test_models_list_each_runs_task_name(client):
    models = {m.id: m for m in client.models.list()}
    assert {"reviews", "reviews:task", "notes", "notes:task"} <= set(models)
    assert models["reviews:task"].task == {"type": "classification", "run": "reviews",
                                           "labels": ["awful", "fine", "great"], "input": "text", "fields": [],
                                           "optional_fields": []}
    assert models["notes:task"].task["input"] == "prompt" and models["notes:task"].task["fields"] == ["topic"]
    assert not hasattr(models["reviews"], "task")


def test_served_labels_equal_the_evaluated_predictions(client, runs):
    pairs = evaluated(runs["reviews"])
    expected = [p["prediction"] for _, p in pairs]
    assert len(set(expected)) > 1, "the run predicts one label for every input: this test could not tell inputs apart"
    for record, predicted in pairs:
        reply = client.chat.completions.create(model="reviews:task",
                                               messages=[{"role": "user", "content": record["text"]}])
        choice = reply.choices[0]
        assert choice.message.content == predicted["prediction"]
        probabilities = choice.label_probabilities
        assert list(probabilities) == ["awful", "fine", "great"]
        assert all(0.0 <= p <= 1.0 for p in probabilities.values())
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-9)
        # The probabilities are those of the scores evaluation saved (rounded to 4 decimals there).
        for label, logp in log_softmax(predicted["scores"]).items():
            assert math.log(probabilities[label]) == pytest.approx(logp, abs=1e-3), (record, label)
    batch = client.completions.create(model="reviews:task", prompt=[r["text"] for r, _ in pairs])
    assert [c.text for c in batch.choices] == expected


def test_label_logprobs_and_streaming_take_openai_shapes(client, runs):
    record, predicted = evaluated(runs["reviews"])[0]
    reply = client.chat.completions.create(model="reviews:task", messages=[
        {"role": "system", "content": "ignored: the run's template brings its own"},
        {"role": "user", "content": record["text"]}], logprobs=True, top_logprobs=2)
    answer = reply.choices[0].logprobs.content[0]
    assert answer.token == predicted["prediction"] == reply.choices[0].message.content
    assert [t.token for t in answer.top_logprobs][0] == answer.token and len(answer.top_logprobs) == 2
    assert math.exp(answer.logprob) == pytest.approx(reply.choices[0].label_probabilities[answer.token])
    assert reply.usage.completion_tokens == 3  # the label's two tokens and EOS, as evaluation counts them
    chunks = list(client.chat.completions.create(model="reviews:task", stream=True,
                                                 messages=[{"role": "user", "content": record["text"]}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == predicted["prediction"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].label_probabilities == pytest.approx(reply.choices[0].label_probabilities)


def test_generation_task_returns_the_evaluated_outputs(client, runs):
    for record, predicted in evaluated(runs["notes"]):
        reply = client.chat.completions.create(model="notes:task",
                                               messages=[{"role": "user", "content": record["prompt"]}],
                                               extra_body={"fields": {"topic": record["topic"]}})
        assert reply.choices[0].message.content == predicted["prediction"], record


@pytest.mark.parametrize("path, body, status, param", [
    ("chat", {"model": "reviews:task", "messages": [{"role": "system", "content": "no user"}]}, 400, "messages"),
    ("chat", {"model": "reviews:task", "messages": [{"role": "user", "content": "  \n "}]}, 400, "messages"),
    ("completions", {"model": "reviews:task", "prompt": ""}, 400, "prompt"),
    ("completions", {"model": "reviews:task", "prompt": [5, 6, 7]}, 400, "prompt"),
    ("chat", {"model": "reviews:task", "messages": [{"role": "user", "content": "ok"}], "temperature": 0.7}, 400,
     "temperature"),
    ("chat", {"model": "notes:task", "messages": [{"role": "user", "content": "ok"}]}, 400, "fields"),
    ("chat", {"model": "notes:task", "messages": [{"role": "user", "content": "ok"}], "fields": {"topic": "x"},
              "logprobs": True}, 400, "logprobs"),
    ("chat", {"model": "notes:task", "messages": [{"role": "user", "content": "ok"}], "fields": {"topic": "x"},
              "max_tokens": 600}, 400, "max_tokens"),
    ("chat", {"model": "notes", "messages": [{"role": "user", "content": "ok"}], "fields": {"topic": "x"}}, 400,
     "fields"),
    ("chat", {"model": "reviews", "messages": [{"role": "user", "content": "ok"}], "logprobs": True}, 400, "logprobs"),
    ("chat", {"model": "reviews:tsk", "messages": [{"role": "user", "content": "ok"}]}, 404, "model"),
])
def test_bad_task_requests_get_openai_errors(server, path, body, status, param):
    response = httpx.post(f"{server.url}/v1/{'chat/completions' if path == 'chat' else 'completions'}", json=body,
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"] and "\n" not in error["message"] and "Traceback" not in error["message"]


def test_predict_answers_a_classification_run_with_its_evaluated_labels(runs, tmp_path):
    from lmtune.predict_file import predict_file

    pairs = evaluated(runs["reviews"])
    out = tmp_path / "out.jsonl"
    predict_file(str(runs["reviews"]), write_jsonl(tmp_path / "in.jsonl", [r for r, _ in pairs]), out, quiet=True)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["prediction"] for line in lines] == [p["prediction"] for _, p in pairs]
    assert all(sum(line["label_probabilities"].values()) == pytest.approx(1.0) for line in lines)
