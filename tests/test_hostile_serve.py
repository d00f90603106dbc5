"""Hostile HTTP input against a real server: every bad body, header or upload gets a 4xx, never a 5xx.

``HOSTILE`` is the table of hostile requests (``benchmarks/serve_hostile.py`` replays it under load);
each must get ``assert_client_error``: a 4xx with an OpenAI error body and no traceback. ``ODD_BUT_VALID``
are requests that look hostile but are allowed by the API (temperature 1e-40, top_p 1e-300, a 40-digit
seed) and must succeed. The last tests check that such requests, and failures of single rows inside the
engine, never fail the requests that share their batch.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest
import torch
from hostile import assert_client_error

from lmtune.serve.engine import decode
from lmtune.serve.engine.batching import Engine, Sequence
from lmtune.serve.engine.text import StopText
from lmtune.serve.http.server import Server

KEY = "sk-hostile"
USER = [{"role": "user", "content": "the movie was great"}]
TRAIN = "".join(json.dumps({"messages": [{"role": "user", "content": f"review {i}"},
                                         {"role": "assistant", "content": "positive"}]}) + "\n"
                for i in range(8)).encode()
LABELLED = "".join(json.dumps({"text": f"review {i}", "label": "positive"}) + "\n" for i in range(8)).encode()


@dataclass
class Ctx:
    """What a hostile request may refer to: the served model and uploaded files of two formats."""

    model: str
    file_id: str  # chat records
    other_file_id: str = ""  # classification records


def _chat(**fields):
    return lambda c: {"json": {"model": c.model, "messages": USER, "max_tokens": 4, **fields}}


def _raw(path: str, text: str | bytes, content_type: str = "application/json"):
    """A body sent as given (bytes or text with ``{model}``/``{file}`` filled in): NaN, Infinity, bad UTF-8."""
    def build(c):
        body = text if isinstance(text, bytes) else text.format(model=c.model, file=c.file_id).encode()
        return {"path": path, "content": body, "headers": {"Content-Type": content_type}}
    return build


def _job(**fields):
    return lambda c: {"path": "/v1/fine_tuning/jobs", "json": {"model": c.model, "training_file": c.file_id, **fields}}


def _upload(filename, data: bytes, purpose: str = "fine-tune"):
    return lambda c: {"path": "/v1/files", "files": {"file": (filename, data)}, "data": {"purpose": purpose}}


def _completion(**fields):
    return lambda c: {"path": "/v1/completions", "json": {"model": c.model, "max_tokens": 4, **fields}}


NUMBERS = '{{"model": "{model}", "messages": [{{"role": "user", "content": "hi"}}], '
HOSTILE = [
    ("temperature_nan", _raw("/v1/chat/completions", NUMBERS + '"temperature": NaN}}')),
    ("max_tokens_infinity", _raw("/v1/chat/completions", NUMBERS + '"max_tokens": Infinity}}')),
    ("max_tokens_huge", _chat(max_tokens=10**40)),
    ("n_huge", _chat(n=10**40)),
    ("top_p_negative_huge", _chat(top_p=-1e308)),
    ("messages_wrong_type", _chat(messages="hi")),
    ("messages_empty", _chat(messages=[])),
    ("model_wrong_type", _chat(model=5)),
    ("model_unknown", _chat(model="no-such-model")),
    ("logit_bias", _chat(logit_bias={"1": 1e308})),
    ("stop_five_sequences", _chat(stop=["a", "b", "c", "d", "e"])),
    ("content_part_not_text", _chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}])),
    ("body_nested_100000", _raw("/v1/chat/completions", b"[" * 100_000)),
    ("body_not_utf8", _raw("/v1/chat/completions", b'{"model": "\xff\xfe", "messages": []}')),
    ("body_json_array", _raw("/v1/chat/completions", "[1, 2, 3]")),
    ("body_not_json_type", _raw("/v1/chat/completions", "model=x", "application/x-www-form-urlencoded")),
    ("prompt_token_id_huge", _completion(prompt=[10**40])),
    ("prompt_empty", _completion(prompt="")),
    ("auth_wrong_key", lambda c: {**_chat()(c), "headers": {"Authorization": "Bearer wrong"}}),
    ("auth_missing", lambda c: {**_chat()(c), "headers": {"Authorization": ""}}),
    ("auth_not_ascii", lambda c: {**_chat()(c), "headers": {"Authorization": b"Bearer \xff\xfe\xe9"}}),
    ("upload_nested_jsonl", _upload("deep.jsonl", b"[" * 100_000 + b"\n")),
    ("upload_huge_integer", _upload("big.jsonl", b'{"text": "a", "label": ' + b"9" * 5000 + b"}\n")),
    ("upload_not_utf8", _upload("latin.jsonl", b'{"text": "caf\xe9", "label": "x"}\n')),
    ("upload_empty", _upload("empty.jsonl", b"")),
    ("upload_hostile_name", _upload("../../etc/passwd", TRAIN)),
    ("upload_wrong_purpose", _upload("t.jsonl", TRAIN, purpose="assistants")),
    ("upload_garbage_multipart", _raw("/v1/files", b"--xx\r\ngarbage\r\n--", "multipart/form-data; boundary=xx")),
    ("upload_no_boundary", _raw("/v1/files", b"abc", "multipart/form-data")),
    ("delete_file_id_traversal", lambda c: {"method": "DELETE", "path": "/v1/files/..%2F..%2Fstate.db"}),
    ("job_seed_huge", _job(seed=10**40)),
    ("job_method_type_list", _job(method={"type": ["supervised"]})),
    ("job_hyperparameters_list", _job(method={"type": "supervised", "supervised": {"hyperparameters": [1]}})),
    ("job_learning_rate_nan", _raw("/v1/fine_tuning/jobs", '{{"model": "{model}", "training_file": "{file}", '
                                   '"hyperparameters": {{"learning_rate_multiplier": NaN}}}}')),
    ("job_epochs_huge", _job(hyperparameters={"n_epochs": 10**40})),
    ("job_model_unknown_home", _job(model="~no-such-user-here/model")),
    ("job_model_name_too_long", _job(model="m" * 5000)),
    ("job_file_missing", _job(training_file="file-does-not-exist")),
    ("job_file_wrong_format", _job(method={"type": "dpo"})),
    ("job_validation_other_format", lambda c: _job(validation_file=c.other_file_id)(c)),
]
ODD_BUT_VALID = [
    ("temperature_1e-40", _chat(temperature=1e-40)),
    ("temperature_1e-40_stream", _chat(temperature=1e-40, stream=True)),
    ("temperature_1e-40_n4", _chat(temperature=1e-40, n=4, seed=3)),
    ("completion_temperature_1e-40", _completion(prompt="the movie", temperature=1e-40)),
    ("top_p_1e-300", _chat(temperature=1.0, top_p=1e-300)),
    ("seed_huge", _chat(temperature=1.0, seed=10**40)),
    ("stop_huge", _chat(stop=["x" * 100_000])),
]


def send(client: httpx.Client, ctx: Ctx, build) -> httpx.Response:
    """Send one table entry (chat completions unless it names a path; authorised unless it sets headers)."""
    spec = dict(build(ctx))
    method, path = spec.pop("method", "POST"), spec.pop("path", "/v1/chat/completions")
    headers = {"Authorization": f"Bearer {KEY}", **spec.pop("headers", {})}
    return client.request(method, path, headers=headers, **spec)


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    srv = Server([str(tiny_model_dir)], port=0, api_key=KEY, state_dir=tmp_path_factory.mktemp("hostile-state"),
                 precision="fp32", quiet=True).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def upload_context(client: httpx.Client, model: str) -> Ctx:
    """Upload the files hostile requests refer to."""
    ids = []
    for name, data in (("train.jsonl", TRAIN), ("labelled.jsonl", LABELLED)):
        upload = client.post("/v1/files", files={"file": (name, data)}, data={"purpose": "fine-tune"},
                             headers={"Authorization": f"Bearer {KEY}"})
        assert upload.status_code == 200, upload.text
        ids.append(upload.json()["id"])
    return Ctx(model, *ids)


@pytest.fixture(scope="module")
def ctx(http, tiny_model_dir):
    return upload_context(http, tiny_model_dir.name)


@pytest.mark.parametrize("build", [b for _, b in HOSTILE], ids=[n for n, _ in HOSTILE])
def test_hostile_request_gets_a_client_error(http, ctx, build):
    assert_client_error(send(http, ctx, build))


def test_unparsable_bodies_say_why(http, ctx):
    error = assert_client_error(send(http, ctx, _raw("/v1/chat/completions", b"[" * 100_000)))
    assert "recursion" in error["message"], error
    error = assert_client_error(send(http, ctx, _raw("/v1/chat/completions", b'{"model": "\xff"}')))
    assert "utf-8" in error["message"].lower(), error


def test_upload_errors_name_the_line(http, ctx):
    error = assert_client_error(send(http, ctx, _upload("deep.jsonl", TRAIN + b"[" * 100_000 + b"\n")))
    assert error["message"].startswith("deep.jsonl:9: "), error
    error = assert_client_error(send(http, ctx, _upload("big.jsonl", b"\n" + b'{"a": ' + b"1" * 5000 + b"}\n")))
    assert error["message"].startswith("big.jsonl:2: "), error


@pytest.mark.parametrize("build", [b for _, b in ODD_BUT_VALID], ids=[n for n, _ in ODD_BUT_VALID])
def test_odd_but_valid_request_succeeds(http, ctx, build):
    response = send(http, ctx, build)
    assert response.status_code == 200, response.text[:500]
    assert "error" not in response.text[:2000]


def test_tiny_temperature_and_normal_requests_share_a_batch(http, ctx):
    """A temperature-1e-40 request is greedy, and the requests decoded beside it are unaffected."""
    prompts = [f"the movie was great #{i}" for i in range(8)]
    bodies = [{"model": ctx.model, "messages": [{"role": "user", "content": p}], "max_tokens": 12,
               "temperature": 0} for p in prompts]
    solo = [_content(send(http, ctx, lambda c, b=b: {"json": b})) for b in bodies]
    odd = [{**b, "temperature": 1e-40} for b in bodies[:2]]
    results: dict[int, httpx.Response] = {}
    barrier = threading.Barrier(len(bodies) + len(odd))

    def one(i, body):
        barrier.wait()
        results[i] = send(http, ctx, lambda c: {"json": body})

    threads = [threading.Thread(target=one, args=(i, b)) for i, b in enumerate(bodies + odd)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for _, r in sorted(results.items())] == [200] * len(threads)
    assert [_content(results[i]) for i in range(len(bodies))] == solo
    assert [_content(results[len(bodies) + i]) for i in range(len(odd))] == solo[:2]  # 1e-40 is greedy


def test_normal_requests_survive_a_hostile_crowd(http, ctx, server):
    """32 normal requests and every hostile body of the table at once: every normal one succeeds, no 5xx."""
    normal = [_chat(messages=[{"role": "user", "content": f"review {i}"}], max_tokens=8,
                    temperature=[0, 1.0, 1e-40][i % 3]) for i in range(32)]
    hostile = [build for _, build in HOSTILE]
    assert len(hostile) >= 32
    statuses = crowd(server.url, ctx, normal, hostile)
    assert statuses["normal"] == [200] * 32, statuses["normal"]
    assert all(400 <= s < 500 for s in statuses["hostile"]), statuses["hostile"]


def crowd(url: str, ctx: Ctx, normal: list, hostile: list) -> dict[str, list[int]]:
    """Send every request at once (one thread each) and return the status codes (599: no response)."""
    out = {"normal": [0] * len(normal), "hostile": [0] * len(hostile)}
    jobs = [("normal", i, b) for i, b in enumerate(normal)] + [("hostile", i, b) for i, b in enumerate(hostile)]
    barrier = threading.Barrier(len(jobs))

    def one(kind, i, build):
        with httpx.Client(base_url=url, timeout=300) as client:
            barrier.wait()
            try:
                out[kind][i] = send(client, ctx, build).status_code
            except httpx.HTTPError:
                out[kind][i] = 599

    threads = [threading.Thread(target=one, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _content(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text[:500]
    return response.json()["choices"][0]["message"]["content"]


# ---------------------------------------------------------------------- sampling and the engine, without HTTP

def test_sample_is_safe_for_any_allowed_temperature_and_bad_logits():
    logits = torch.tensor([[0.0, 3.0, 1.0], [0.0, 3.0, 1.0], [1e38, 3e38, -1e38], [float("nan"), 2.0, float("inf")],
                           [float("nan")] * 3, [-float("inf"), 0.5, -float("inf")]])
    temperature = [1e-40, 0.0, 0.5, 1.0, 1.0, 2.0]
    generators = [torch.Generator().manual_seed(i) for i in range(len(temperature))]
    chosen = decode.sample(logits, temperature, [1.0, 1.0, 1.0, 1.0, 1.0, 1e-300], generators)
    # A row with no finite logit cannot be sampled (None: that row fails); NaN/inf fall back to the finite ones.
    assert chosen == [1, 1, 1, 1, None, 1]


def test_a_failing_row_fails_alone(tiny_model_dir, monkeypatch):
    """A row whose logits are NaN, or whose prompt makes the forward raise, fails; its neighbours do not."""
    from lmtune import models

    model, tokenizer, _ = models.load_causal_lm(str(tiny_model_dir))
    poison, nan_row = 7, 9  # a prompt holding token 7 makes the forward raise; one starting with 9 gets NaN logits
    prompts = [[20, 21, 22], [nan_row, 21], [30, poison, 31], [23, 24, 25, 26]]
    solo = [_generate(Engine(model, 0, 512, max_batch=1), tokenizer, [p])[0] for p in (prompts[0], prompts[3])]
    real_prefill, real_step = decode.prefill, decode.step
    steps = {"n": 0}

    def prefill(forward, prompts, *args):
        if any(poison in p for p in prompts):
            raise RuntimeError("poisoned prompt")
        batch, logits = real_prefill(forward, prompts, *args)
        logits[[i for i, p in enumerate(prompts) if p[0] == nan_row]] = float("nan")
        return batch, logits

    def step(forward, batch):
        steps["n"] += 1
        if steps["n"] == 2:  # one failure of a whole decoding step: the rows are rebuilt, none fails
            raise RuntimeError("transient")
        return real_step(forward, batch)

    monkeypatch.setattr(decode, "prefill", prefill)
    monkeypatch.setattr(decode, "step", step)
    got = _generate(Engine(model, 0, 512), tokenizer, prompts, temperature=[0.0, 1e-40, 1.0, 1e-30])
    assert got[1][0] == "error" and got[2][0] == "error"
    assert [got[0], got[3]] == solo
    assert steps["n"] > 2


def _generate(engine: Engine, tokenizer, prompts, temperature=None) -> list[tuple[str, list[int]]]:
    """Run ``prompts`` through ``engine`` (submitted together); each row's outcome and generated tokens."""
    events: dict[int, list] = {i: [] for i in range(len(prompts))}
    done = threading.Semaphore(0)

    def emit(i):
        def on(kind, data):
            events[i].append(kind)
            if kind != "delta":
                done.release()
        return on

    seqs = [Sequence(prompt=p, max_tokens=6, text=StopText(tokenizer), emit=emit(i), eos=frozenset(),
                     temperature=(temperature or [0.0] * len(prompts))[i]) for i, p in enumerate(prompts)]
    engine.start()
    try:
        engine.submit(seqs)
        for _ in prompts:
            assert done.acquire(timeout=60)
    finally:
        engine.stop()
    return [(events[i][-1], seqs[i].text.tokens) for i in range(len(prompts))]


def test_a_file_whose_stored_copy_is_gone_is_a_404_not_a_500(http, ctx, server):
    upload = send(http, ctx, _upload("gone.jsonl", TRAIN))
    assert upload.status_code == 200, upload.text
    stored = [p for p in Path(server.state_dir).rglob("*") if p.is_file() and upload.json()["id"] in p.name]
    assert stored, "the upload is stored under the state directory"
    for path in stored:
        path.unlink()
    error = assert_client_error(send(http, ctx, lambda c: {"method": "GET",
                                                           "path": f"/v1/files/{upload.json()['id']}/content"}))
    assert "upload it again" in error["message"]


def test_a_body_over_the_limit_is_refused_before_it_is_held(http, ctx):
    from lmtune.serve.http.limits import MAX_JSON_BODY

    big = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"a" * MAX_JSON_BODY + b'"}]}'
    error = assert_client_error(send(http, ctx, _raw("/v1/chat/completions", big)))
    assert "larger than 16 MB" in error["message"], error

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(MAX_JSON_BODY // 2**20 + 2):
            yield b" " * 2**20

    response = http.post("/v1/chat/completions", content=chunks(), headers={"Authorization": f"Bearer {KEY}",
                                                                           "Content-Type": "application/json"})
    error = assert_client_error(response)
    assert "larger than 16 MB" in error["message"], error
