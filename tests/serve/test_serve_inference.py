"""The OpenAI-compatible inference endpoints (``lmtune.serve.http.inference``: models, chat completions,
completions) on localhost, driven by the official openai client.

One server holds the tiny base model and two LoRA runs trained on it (three names, one base in
memory). Replies are checked against offline generation with the same weights, so a request that
reached the wrong adapter, or a batch that mixed up rows, fails.
"""

import json
import threading
import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from serving import train_chat_run

from lmtune.data.encode import Encoder
from lmtune.inference.generation import generate
from lmtune.serve.http.server import Server

KEY = "sk-test"
PROMPTS = ["the movie was great", "this drug gave me awful side effects", "what is the sentiment of this review",
           "it was fine, nothing special", "you are a helpful assistant", "summarize the following text",
           "classify the text as positive or negative", "this drug helped my pain a lot"]


def chat_records(n: int = 24):
    return [{"messages": [{"role": "user", "content": f"{PROMPTS[i % len(PROMPTS)]} #{i}"},
                          {"role": "assistant", "content": ["positive", "negative", "neutral"][i % 3]}]}
            for i in range(n)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("serve-runs")
    data = root / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in chat_records()))
    return {"run-a": train_chat_run(root / "run-a", tiny_model_dir, data, seed=1),
            "run-b": train_chat_run(root / "run-b", tiny_model_dir, data, seed=2)}


@pytest.fixture(scope="module")
def server(runs, tiny_model_dir, tmp_path_factory):
    srv = Server([str(tiny_model_dir), str(runs["run-a"]), str(runs["run-b"])], port=0, api_key=KEY,
                 state_dir=tmp_path_factory.mktemp("serve-state"), precision="fp32", quiet=True).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def offline_replies(ref: Path, prompts: list[str], max_tokens: int) -> list[str]:
    """Greedy replies of the same weights without the server (transformers generate, one prompt at a time)."""
    from lmtune import models
    from lmtune.export import load_final

    if (ref / "final").exists():
        model, tokenizer = load_final(ref / "final")
    else:
        model, tokenizer, _ = models.load_causal_lm(str(ref))
    encoder = Encoder(tokenizer, 512)
    out = []
    for prompt in prompts:
        ids = encoder.prompt_ids([{"role": "user", "content": prompt}])
        texts, _ = generate(model, tokenizer, [ids], max_tokens, tokenizer.pad_token_id, quiet=True)
        out.append(texts[0])
    return out


def ask(client, model: str, prompt: str, **options):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                          **{"temperature": 0, **options})


def test_models_lists_the_base_and_every_run(client, tiny_model_dir):
    names = {m.id for m in client.models.list()}
    assert names == {tiny_model_dir.name, "run-a", "run-b"}
    assert client.models.retrieve("run-a").id == "run-a"


def test_each_name_gets_its_own_adapter(client, runs, tiny_model_dir):
    prompts = PROMPTS[:4]
    expected = {"run-a": offline_replies(runs["run-a"], prompts, 12),
                "run-b": offline_replies(runs["run-b"], prompts, 12),
                tiny_model_dir.name: offline_replies(tiny_model_dir, prompts, 12)}
    # The three models must disagree somewhere, or this test could not tell them apart.
    assert len({tuple(v) for v in expected.values()}) == 3
    for name, replies in expected.items():
        got = [ask(client, name, p, max_tokens=12).choices[0].message.content.strip() for p in prompts]
        assert got == replies, name


def test_chat_reply_has_usage_and_stops_at_the_limit(client, runs):
    reply = ask(client, "run-a", PROMPTS[0], max_tokens=5)
    prompt_ids = Encoder(_tokenizer(runs["run-a"]), 512).prompt_ids([{"role": "user", "content": PROMPTS[0]}])
    assert reply.object == "chat.completion" and reply.model == "run-a"
    assert reply.usage.prompt_tokens == len(prompt_ids)
    assert reply.usage.completion_tokens <= 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.choices[0].finish_reason in ("stop", "length")
    if reply.choices[0].finish_reason == "length":
        assert reply.usage.completion_tokens == 5


def test_streaming_gives_the_same_text_in_chunks(client):
    whole = ask(client, "run-b", PROMPTS[1], max_tokens=16)
    stream = ask(client, "run-b", PROMPTS[1], max_tokens=16, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def _plain_completion(client):
    return client.completions.create(model="run-a", prompt="the movie was", max_tokens=12, temperature=0)


def test_a_completion_counts_its_prompt_tokens(client, runs):
    plain = _plain_completion(client)
    assert plain.usage.prompt_tokens == len(_tokenizer(runs["run-a"])("the movie was")["input_ids"])


def test_a_stop_string_cuts_a_completion(client):
    text = _plain_completion(client).choices[0].text
    # Cut at two characters from inside the reply (whole characters, not half of a UTF-8 sequence).
    starts = [i for i in range(1, len(text) - 1) if "\ufffd" not in text[i:i + 2]]
    assert starts, f"reply too short to test stop strings: {text!r}"
    stop = text[starts[0]:starts[0] + 2]
    cut = client.completions.create(model="run-a", prompt="the movie was", max_tokens=12, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_several_prompts_and_n_give_n_choices_per_prompt_in_order(client, runs):
    plain = _plain_completion(client)
    many = client.completions.create(model="run-a", prompt=["the movie was", "this drug"], n=2, max_tokens=6,
                                     temperature=0)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    six = client.completions.create(model="run-a", prompt="this drug", max_tokens=6, temperature=0).choices[0].text
    assert many.choices[2].text == many.choices[3].text == six
    assert many.usage.prompt_tokens == plain.usage.prompt_tokens + six_prompt_tokens(runs)


def test_a_streamed_completion_gives_the_same_text(client):
    text = _plain_completion(client).choices[0].text
    stream = client.completions.create(model="run-a", prompt="the movie was", max_tokens=12, temperature=0,
                                       stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == text


def test_a_seed_makes_sampling_repeatable(client):
    def sample(seed):
        return ask(client, "run-a", PROMPTS[2], max_tokens=12, n=2, seed=seed, temperature=1.0,
                   top_p=0.9).choices

    first, again = sample(7), sample(7)
    assert [c.message.content for c in first] == [c.message.content for c in again]


def test_concurrent_requests_are_batched_and_unchanged(client, server):
    solo = {p: ask(client, "run-a" if i % 2 else "run-b", p, max_tokens=24).choices[0].message.content
            for i, p in enumerate(PROMPTS)}
    before = _metric(server, "lmtune_batch_rows_bucket", 'le="1.0"'), _metric(server, "lmtune_batch_rows_count")
    results, barrier = {}, threading.Barrier(len(PROMPTS))

    def worker(i, prompt):
        barrier.wait()
        results[prompt] = ask(client, "run-a" if i % 2 else "run-b", prompt, max_tokens=24).choices[0].message.content

    threads = [threading.Thread(target=worker, args=(i, p)) for i, p in enumerate(PROMPTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == solo
    single = _metric(server, "lmtune_batch_rows_bucket", 'le="1.0"') - before[0]
    steps = _metric(server, "lmtune_batch_rows_count") - before[1]
    assert steps > single, "no decoding step ran more than one request"


USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("body, status, param", [
    ({"model": "run-a"}, 400, "messages"),                                      # messages missing
    ({"model": "run-a", "messages": []}, 400, "messages"),
    ({"model": "run-a", "messages": USER, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "run-a", "messages": USER, "temperature": 3}, 400, "temperature"),
    ({"model": "nope", "messages": USER}, 404, "model"),
    ({"model": "run-a", "messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
     "tools"),
    ({"model": "run-a", "messages": USER, "max_tokens": 600}, 400, "max_tokens"),     # past the 512-token context
    ({"model": "run-a", "messages": [{"role": "user", "content": "the movie " * 400}]}, 400, "messages"),
])
def test_bad_requests_get_openai_errors(server, body, status, param):
    response = _post(server, "/v1/chat/completions", body)
    assert response.status_code == status, (body, response.text)
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


def test_the_openai_client_raises_its_own_errors_for_them(client):
    user = USER
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=user)
    with pytest.raises(openai.BadRequestError, match="context length"):
        client.chat.completions.create(model="run-a", messages=[{"role": "user", "content": "the movie " * 400}])


def test_a_body_that_is_not_json_is_a_400(server):
    bad_json = httpx.post(server.url + "/v1/chat/completions", content=b'{"model": "run-a", "messages": [',
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["error"]["message"]


def test_a_missing_or_wrong_key_is_a_401(server):
    user = USER
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        denied = httpx.post(server.url + "/v1/chat/completions", json={"model": "run-a", "messages": user},
                            headers=headers)
        assert denied.status_code == 401 and denied.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_an_unknown_field_is_a_400_naming_it(server):
    unknown = _post(server, "/v1/completions", {"model": "run-a", "prompt": "x", "frobnicate": 1})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "frobnicate"


def test_an_unknown_route_is_a_404(server):
    assert _post(server, "/v1/nothing", {}).status_code == 404


def test_full_queue_answers_429(tiny_model_dir, tmp_path):
    srv = Server([str(tiny_model_dir)], port=0, state_dir=tmp_path, max_batch=1, max_queue=1, quiet=True).start()
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
        body = {"model": tiny_model_dir.name, "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 150,
                    "temperature": 0, "stream": True}
        running = client.chat.completions.create(**body)
        wait_for_health(srv, running=1, waiting=0)            # admitted and decoding
        waiting = client.chat.completions.create(**body)
        wait_for_health(srv, running=1, waiting=1)            # the one waiting place is taken
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(**{**body, "stream": False})
        assert caught.value.body["code"] == "rate_limit_exceeded"
        assert sum(1 for _ in running) > 0 and sum(1 for _ in waiting) > 0
        assert "lmtune_rejected_requests_total 1.0" in httpx.get(srv.url + "/metrics").text
    finally:
        srv.stop()


def test_health_needs_no_key(server, client):
    ask(client, "run-a", PROMPTS[0], max_tokens=4)
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and "run-a" in health["models"]


def test_metrics_need_no_key_and_count_tokens_latency_and_requests(server, client):
    ask(client, "run-a", PROMPTS[0], max_tokens=4)
    text = httpx.get(server.url + "/metrics").text
    assert 'lmtune_generated_tokens_total{model="run-a"}' in text
    assert 'lmtune_request_latency_seconds_bucket{endpoint="chat"' in text
    assert 'lmtune_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in text


def wait_for_health(server, timeout: float = 30, **expected):
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(server.url + "/health").json()
        if all(health[k] == v for k, v in expected.items()):
            return
        assert time.monotonic() < deadline, health
        time.sleep(0.02)


def six_prompt_tokens(runs) -> int:
    return len(_tokenizer(runs["run-a"])("this drug")["input_ids"])


def _tokenizer(run: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(run / "final")


def _post(server, path: str, body: dict):
    return httpx.post(server.url + path, json=body, headers={"Authorization": f"Bearer {KEY}"})


def _metric(server, name: str, label: str = "") -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name) and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0

