"""A run served as trained (``lmtune.serve.engine.task``, ``lmtune.serve.http.task_api``): ``<run>:task``
takes the raw input and answers as evaluation did.

One server holds a generation run and a classification run, two LoRA adapters on the tiny base (the
generation run is loaded first, so its adapter is the active one unless serving picks the other).
Every test input of the classification run, sent to its task model, must get the label its
``predictions/finetuned.jsonl`` (what ``eval.json`` scored) holds, with the softmax of the label
scores evaluation saved as probabilities; the generation run's task model must return evaluation's
greedy outputs.
"""

import math

import httpx2 as httpx
import openai
import pytest
from conftest import evaluated

from lmtune.serve.http.server import Server

KEY = "sk-task"


@pytest.fixture(scope="module")
def server(task_runs, tmp_path_factory):
    srv = Server([str(task_runs["notes"]), str(task_runs["reviews"])], port=0, api_key=KEY, precision="fp32",
                 quiet=True, state_dir=tmp_path_factory.mktemp("task-state")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def log_softmax(scores: dict[str, float]) -> dict[str, float]:
    top = max(scores.values())
    norm = top + math.log(sum(math.exp(s - top) for s in scores.values()))
    return {label: s - norm for label, s in scores.items()}


def test_models_list_each_task_runs_task_name(client):
    models = {m.id: m for m in client.models.list()}
    assert {"reviews", "reviews:task", "notes", "notes:task"} <= set(models)
    assert models["reviews:task"].task == {"type": "classification", "run": "reviews",
                                           "labels": ["awful", "fine", "great"], "input": "text", "fields": [],
                                           "optional_fields": []}
    assert models["notes:task"].task["input"] == "prompt" and models["notes:task"].task["fields"] == ["topic"]
    assert not hasattr(models["reviews"], "task")


def test_served_labels_equal_the_evaluated_predictions(client, task_runs):
    pairs = evaluated(task_runs["reviews"])
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


def test_a_batch_of_completions_gets_the_evaluated_labels(client, task_runs):
    pairs = evaluated(task_runs["reviews"])
    expected = [p["prediction"] for _, p in pairs]
    batch = client.completions.create(model="reviews:task", prompt=[r["text"] for r, _ in pairs])
    assert [c.text for c in batch.choices] == expected


def _reply_with_logprobs(client, record):
    return client.chat.completions.create(model="reviews:task", messages=[
        {"role": "system", "content": "ignored: the run's template brings its own"},
        {"role": "user", "content": record["text"]}], logprobs=True, top_logprobs=2)


def test_label_logprobs_take_openai_shapes(client, task_runs):
    record, predicted = evaluated(task_runs["reviews"])[0]
    reply = _reply_with_logprobs(client, record)
    answer = reply.choices[0].logprobs.content[0]
    assert answer.token == predicted["prediction"] == reply.choices[0].message.content
    assert [t.token for t in answer.top_logprobs][0] == answer.token and len(answer.top_logprobs) == 2
    assert math.exp(answer.logprob) == pytest.approx(reply.choices[0].label_probabilities[answer.token])
    assert reply.usage.completion_tokens == 3  # the label's two tokens and EOS, as evaluation counts them


def test_a_streamed_label_takes_openai_shapes(client, task_runs):
    record, predicted = evaluated(task_runs["reviews"])[0]
    reply = _reply_with_logprobs(client, record)
    chunks = list(client.chat.completions.create(model="reviews:task", stream=True,
                                                 messages=[{"role": "user", "content": record["text"]}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == predicted["prediction"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].label_probabilities == pytest.approx(reply.choices[0].label_probabilities)


def test_generation_task_returns_the_evaluated_outputs(client, task_runs):
    for record, predicted in evaluated(task_runs["notes"]):
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
