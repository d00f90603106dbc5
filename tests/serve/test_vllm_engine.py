"""``lmtune serve --engine vllm`` (``lmtune.serve.vllm``, ``lmtune.serve.upstream``) without vLLM and without a GPU.

vLLM needs CUDA, so what is tested here is everything around it, against real servers:

* the plan and the exact vLLM command line for LoRA runs of one base, and every refusal, on real saved runs;
* the routing layer: a real ``lmtune serve`` runs as a child process (started and watched by the same
  ``ChildServer`` that starts vLLM) and a second, in-process server routes inference to it through an
  ``Upstream``, as ``--engine vllm`` routes it to vLLM. Replies must equal the upstream's own for the same
  request (streamed or not) under the mapped names; files and jobs stay local; hostile requests get the
  status lmtune gives them; an upstream that is gone, hung or dead gives a 502, 504 or 503 JSON error;
* the CLI on this machine (no CUDA, no vLLM): one line, exit 2, before anything loads.
"""

import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from conftest import run_cli
from serving import QUICK, chat_jsonl, train_chat_run, wait
from tiny import build_model, build_tokenizer, save_tiny

from lmtune.distributed import free_port
from lmtune.errors import UserError
from lmtune.methods import registry
from lmtune.run_dir import write_model_info
from lmtune.serve.http.server import Server
from lmtune.serve.upstream import Upstream
from lmtune.serve.vllm.plan import engine_problem, plan_vllm, vllm_command
from lmtune.serve.vllm.process import ChildServer

KEY, UPSTREAM_KEY = "sk-front", "sk-upstream"
USER = [{"role": "user", "content": "the movie was great"}]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    """Two LoRA runs of the tiny model, of ranks 4 and 12 (vLLM's --max-lora-rank must then be 16)."""
    root = tmp_path_factory.mktemp("vllm-runs")
    data = root / "chat.jsonl"
    data.write_bytes(chat_jsonl())
    return {"run-a": train_chat_run(root / "run-a", tiny_model_dir, data, seed=4, rank=4),
            "run-b": train_chat_run(root / "run-b", tiny_model_dir, data, seed=12, rank=12)}


def saved_run(root: Path, name: str, method: str, base: Path, options: dict | None = None, head: bool = False):
    """A run directory's ``final/`` as training leaves it: ``method`` applied to the tiny model and saved."""
    tok = build_tokenizer()
    model = registry.get(method).apply(build_model(len(tok)), options or {}, {})
    final = root / name / "final"
    registry.get(method).save(model, final)
    tok.save_pretrained(final)
    write_model_info(final, {"base_model": str(base), "method": method, "task": {"type": "chat"}, "head": head})
    return final.parent


# ---------------------------------------------------------------- the plan and the command line

def test_two_lora_runs_of_one_base_make_this_vllm_command(runs, tiny_model_dir):
    a, b = (runs[n] / "final" for n in ("run-a", "run-b"))
    expected = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(tiny_model_dir.resolve()), "--served-model-name", tiny_model_dir.name,
                "--enable-lora", "--lora-modules", f"run-a={a.resolve()}", f"run-b={b.resolve()}",
                "--max-lora-rank", "16", "--max-loras", "2", "--host", "127.0.0.1", "--port", "8123"]
    assert vllm_command([str(runs["run-a"]), str(runs["run-b"])], 8123) == expected
    # naming the base too changes nothing: it is served under its own name either way
    assert vllm_command([str(tiny_model_dir), str(runs["run-a"]), str(runs["run-b"])], 8123) == expected
    plan = plan_vllm([str(runs["run-a"]), str(runs["run-b"])])
    assert plan.model_map == {tiny_model_dir.name: tiny_model_dir.name, "run-a": "run-a", "run-b": "run-b"}
    assert plan.bases == {tiny_model_dir.name: str(tiny_model_dir)}


def test_a_name_or_path_with_an_equals_sign_takes_vllms_json_form(runs, tmp_path, tiny_model_dir):
    odd = shutil.copytree(runs["run-a"], tmp_path / "x=y")
    argv = vllm_command([str(odd)], 9000)
    module = json.loads(argv[argv.index("--lora-modules") + 1])
    assert module == {"name": "x=y", "path": str((odd / "final").resolve()), "base_model_name": tiny_model_dir.name}
    assert argv[argv.index("--max-lora-rank") + 1] == "8"  # rank 4: the smallest rank vLLM takes above it


def test_a_base_alone_and_a_full_fine_tune_alone_are_served_as_models(tmp_path, tiny_model_dir):
    assert vllm_command([str(tiny_model_dir)], 1)[3:7] == ["--model", str(tiny_model_dir.resolve()),
                                                         "--served-model-name", tiny_model_dir.name]
    full = saved_run(tmp_path, "whole", "full", tiny_model_dir)
    argv = vllm_command([str(full)], 1)
    assert argv[3:7] == ["--model", str((full / "final").resolve()), "--served-model-name", "whole"]
    assert "--enable-lora" not in argv


def refusal(refs) -> UserError:
    with pytest.raises(UserError) as caught:
        plan_vllm([str(r) for r in refs])
    return caught.value


def test_runs_of_different_bases_are_refused(runs, tmp_path):
    other_base = save_tiny(tmp_path / "other-base", seed=1)
    other = saved_run(tmp_path, "run-c", "lora", other_base, {"r": 4, "target_modules": ["q_proj"]})
    error = refusal([runs["run-a"], other])
    assert error.source == "--engine" and "different base models" in error.message
    assert "one base model with many LoRA adapters" in error.message and "run-c" in error.message


def test_a_full_fine_tune_with_other_runs_is_refused(runs, tmp_path, tiny_model_dir):
    full = saved_run(tmp_path, "whole", "full", tiny_model_dir)
    error = refusal([runs["run-a"], full])
    assert error.source == str(full) and "one base model with many LoRA adapters" in error.message


@pytest.mark.parametrize("method, options, head, words", [
    ("ia3", {}, False, "IA3 runs cannot be served by vLLM, which loads LoRA adapters only"),
    ("prompt_tuning", {"num_virtual_tokens": 2}, False, "prompt tuning runs cannot be served by vLLM"),
    ("adapter", {}, False, "bottleneck adapter runs cannot be served by vLLM"),
    ("lora", {"r": 4, "use_dora": True, "target_modules": ["q_proj"]}, False, "DoRA runs cannot be served by vLLM"),
    ("lora", {"r": 4, "target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}, False, "saves whole modules"),
    ("lora", {"r": 4, "target_modules": ["q_proj"]}, True, "classification/regression head"),
])
def test_runs_vllm_cannot_load_as_lora_are_refused_by_name(tmp_path, tiny_model_dir, method, options, head, words):
    run = saved_run(tmp_path, "odd-run", method, tiny_model_dir, options, head)
    error = refusal([run])
    assert error.source == str(run) and words in error.message and "--engine lmtune" in error.message


def test_a_machine_without_cuda_or_vllm_is_named_in_one_line():
    assert engine_problem(True, True) is None
    assert engine_problem(True, False) == ("vllm needs a CUDA GPU and this machine has none; use --engine lmtune "
                                           "(the default)")
    assert "vLLM is not installed: pip install vllm (on the GPU machine)" in engine_problem(False, True)
    assert "none (and vLLM is not installed)" in engine_problem(False, False)


def test_the_cli_refuses_vllm_here_before_anything_loads(runs, tmp_path):
    # This machine has neither CUDA nor vLLM (the suite runs on CPU): both are said, in the one line.
    code, output = run_cli("serve", runs["run-a"], "--engine", "vllm", "--port", "0", "--state-dir", tmp_path / "s")
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and lines == ["error: --engine: vllm needs a CUDA GPU and this machine has none (and vLLM is "
                                   "not installed); use --engine lmtune (the default)"]
    assert not (tmp_path / "s").exists()  # nothing started, not even the state directory


def test_the_cli_refuses_an_unknown_engine_and_lmtune_engine_options_for_vllm(tmp_path, tiny_model_dir):
    code, output = run_cli("serve", tiny_model_dir, "--engine", "tgi", "--port", "0", "--state-dir", tmp_path)
    assert code == 2 and output.strip() == "error: --engine: unknown engine 'tgi'; use lmtune or vllm"
    code, output = run_cli("serve", tiny_model_dir, "--engine", "vllm", "--precision", "fp32", "--state-dir", tmp_path)
    assert code == 2 and output.strip() == ("error: --precision: sets lmtune's own engine, not vLLM, which batches and "
                                            "picks its dtype on its own; leave it out with --engine vllm")


# ---------------------------------------------------------------- routing to a real upstream server

def lmtune_child(refs, tmp: Path, key: str, warn=lambda m: None, label: str = "lmtune") -> ChildServer:
    """``lmtune serve refs`` as a child process on a free port, started and waited for as vLLM is."""
    port = free_port()
    argv = [sys.executable, "-m", "lmtune.cli", "serve", *map(str, refs), "--port", str(port), "--state-dir",
            str(tmp / "state"), "--precision", "fp32"]
    child = ChildServer(argv, f"http://127.0.0.1:{port}", tmp / "child.log", {"LMTUNE_API_KEY": key,
                                                                            "HF_HUB_OFFLINE": "1"}, label, warn=warn)
    child.start().wait_ready(timeout=180)
    return child


@pytest.fixture(scope="module")
def upstream(runs, tiny_model_dir, tmp_path_factory):
    child = lmtune_child([tiny_model_dir, runs["run-a"], runs["run-b"]], tmp_path_factory.mktemp("upstream"),
                         UPSTREAM_KEY)
    yield child
    child.stop()


@pytest.fixture(scope="module")
def names(tiny_model_dir):
    """The front server's names -> the upstream's: one renamed (streams are rewritten), two the same (relayed)."""
    return {"alpha": "run-a", "run-b": "run-b", tiny_model_dir.name: tiny_model_dir.name}


@pytest.fixture(scope="module")
def front(upstream, names, tiny_model_dir, tmp_path_factory):
    route = Upstream(upstream.url, names, api_key=UPSTREAM_KEY, label="lmtune upstream",
                     bases={tiny_model_dir.name: str(tiny_model_dir)})
    srv = Server([], port=0, api_key=KEY, state_dir=tmp_path_factory.mktemp("front"), quiet=True,
                 default_max_tokens=5, upstream=route).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def clients(front, upstream):
    """(front client, upstream client): the official openai client on each server."""
    return (openai.OpenAI(base_url=front.url + "/v1", api_key=KEY, max_retries=0),
            openai.OpenAI(base_url=upstream.url + "/v1", api_key=UPSTREAM_KEY, max_retries=0))


def test_the_model_list_is_the_upstreams_under_the_front_names(clients, tiny_model_dir):
    front, direct = clients
    assert {m.id for m in direct.models.list()} == {tiny_model_dir.name, "run-a", "run-b"}
    assert {m.id for m in front.models.list()} == {tiny_model_dir.name, "alpha", "run-b"}
    assert front.models.retrieve("alpha").id == "alpha"
    with pytest.raises(openai.NotFoundError):
        front.models.retrieve("run-a")  # the upstream's name is not one this server serves


@pytest.mark.parametrize("name", ["alpha", "run-b"])
def test_a_chat_reply_is_the_upstreams_reply_to_the_same_request(clients, names, name):
    front, direct = clients
    ask = {"messages": USER, "temperature": 0, "max_tokens": 8}
    got = front.chat.completions.create(model=name, **ask)
    want = direct.chat.completions.create(model=names[name], **ask)
    assert got.model == name and got.choices[0].message.content == want.choices[0].message.content
    assert got.choices[0].finish_reason == want.choices[0].finish_reason and got.usage == want.usage


@pytest.mark.parametrize("name", ["alpha", "run-b"])
def test_a_completion_is_the_upstreams_for_the_same_request(clients, names, name):
    front, direct = clients
    ask = {"prompt": ["the movie was", "this drug"], "temperature": 0, "max_tokens": 6, "n": 2}
    got = front.completions.create(model=name, **ask)
    want = direct.completions.create(model=names[name], **ask)
    assert got.model == name and [c.text for c in got.choices] == [c.text for c in want.choices]
    assert got.usage == want.usage


def streamed(client, kind: str, **ask) -> tuple[str, set[str], list]:
    """(the text, the model names the chunks carry, the chunks) of a streamed request."""
    create = client.chat.completions.create if kind == "chat" else client.completions.create
    chunks = list(create(stream=True, temperature=0, **ask))
    texts = [(c.choices[0].delta.content or "") if kind == "chat" else c.choices[0].text for c in chunks if c.choices]
    return "".join(texts), {c.model for c in chunks}, chunks


@pytest.mark.parametrize("name", ["alpha", "run-b"])
@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_a_stream_is_the_upstreams_stream_chunk_for_chunk(clients, names, name, kind):
    front, direct = clients
    ask = {"messages": USER} if kind == "chat" else {"prompt": "the movie was"}
    text, models, chunks = streamed(front, kind, model=name, max_tokens=10, **ask)
    want_text, _, want_chunks = streamed(direct, kind, model=names[name], max_tokens=10, **ask)
    assert text == want_text and models == {name} and len(chunks) == len(want_chunks) > 2
    assert chunks[-1].choices[0].finish_reason == want_chunks[-1].choices[0].finish_reason


def test_a_chat_without_a_limit_gets_the_front_servers_max_tokens(clients):
    front, _ = clients
    reply = front.chat.completions.create(model="alpha", messages=USER, temperature=0)
    assert reply.usage.completion_tokens <= 5  # --max-tokens 5 here; the upstream's own default is 256


def test_a_task_model_or_template_fields_are_refused_as_lmtune_only(front):
    task = post(front, "/v1/chat/completions", {"model": "alpha:task", "messages": USER})
    assert task.status_code == 404 and "--engine lmtune only" in task.json()["error"]["message"]
    fields = post(front, "/v1/completions", {"model": "alpha", "prompt": "x", "fields": {"topic": "a"}})
    assert fields.status_code == 400 and fields.json()["error"]["param"] == "fields"


def test_files_and_fine_tuning_jobs_stay_on_the_front_server(clients, tiny_model_dir):
    front, direct = clients
    upload = front.files.create(file=("train.jsonl", chat_jsonl()), purpose="fine-tune")
    assert upload.id in {f.id for f in front.files.list()} and upload.id not in {f.id for f in direct.files.list()}
    job = front.fine_tuning.jobs.create(model=tiny_model_dir.name, training_file=upload.id, suffix="proxied",
                                        method=QUICK)
    done = wait(front, job.id)
    assert done.status == "succeeded" and done.fine_tuned_model.startswith(f"ft:{tiny_model_dir.name}:proxied:")
    assert job.id not in {j.id for j in direct.fine_tuning.jobs.list()}
    # the upstream serves what it was started with: the trained model is saved, not served
    assert done.fine_tuned_model not in {m.id for m in front.models.list()}


def test_health_says_the_upstream_answers(front):
    health = httpx.get(front.url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["upstream"] == "lmtune upstream" and "alpha" in health.json()["models"]


def post(server, path: str, body, key: str = KEY, **options) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **options.pop("headers", {})}
    return httpx.post(server.url + path, json=body, headers=headers, timeout=60, **options)


NUMBERS = '{"model": "run-b", "messages": [{"role": "user", "content": "hi"}], '
HOSTILE = [
    ("/v1/chat/completions", NUMBERS + '"temperature": NaN}'),
    ("/v1/chat/completions", NUMBERS + '"max_tokens": Infinity}'),
    ("/v1/chat/completions", {"model": "run-b", "messages": USER, "max_tokens": 10**40}),
    ("/v1/chat/completions", {"model": "run-b", "messages": USER, "n": 10**40}),
    ("/v1/chat/completions", {"model": "run-b", "messages": "hi"}),
    ("/v1/chat/completions", {"model": "run-b", "messages": []}),
    ("/v1/chat/completions", {"model": 5, "messages": USER}),
    ("/v1/chat/completions", {"model": "no-such-model", "messages": USER}),
    ("/v1/chat/completions", {"model": "run-b", "messages": USER, "logit_bias": {"1": 1e308}}),
    ("/v1/chat/completions", {"model": "run-b", "messages": USER, "stop": ["a", "b", "c", "d", "e"]}),
    ("/v1/chat/completions", {"model": "run-b", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
    ("/v1/chat/completions", {"model": "run-b", "messages": USER, "frobnicate": 1}),
    ("/v1/chat/completions", b"[" * 100_000),
    ("/v1/chat/completions", b'{"model": "\xff\xfe", "messages": []}'),
    ("/v1/chat/completions", "[1, 2, 3]"),
    ("/v1/completions", {"model": "run-b", "prompt": [10**40]}),
    ("/v1/completions", {"model": "run-b", "prompt": [5000]}),  # past the vocabulary: the upstream refuses it
    ("/v1/completions", {"model": "run-b", "prompt": ""}),
    ("/v1/completions", {"model": "run-b", "prompt": "the movie " * 400}),  # past the context: the upstream's 400
]


@pytest.mark.parametrize("path, body", HOSTILE)
def test_hostile_requests_get_the_status_lmtune_gives_them(front, upstream, path, body):
    if isinstance(body, (str, bytes)):
        raw = body.encode() if isinstance(body, str) else body
        send = {"content": raw, "headers": {"Content-Type": "application/json"}}
        got, want = post(front, path, None, **send), post(upstream, path, None, UPSTREAM_KEY, **send)
    else:
        got, want = post(front, path, body), post(upstream, path, body, UPSTREAM_KEY)
    assert 400 <= got.status_code < 500 and "Traceback" not in got.text
    assert (got.status_code, got.json()["error"]["param"]) == (want.status_code, want.json()["error"]["param"])


def test_a_missing_or_wrong_key_is_a_401_and_the_upstreams_key_is_not_the_front_key(front):
    for headers in ({"Authorization": ""}, {"Authorization": f"Bearer {UPSTREAM_KEY}"}):
        denied = post(front, "/v1/chat/completions", {"model": "alpha", "messages": USER}, headers=headers)
        assert denied.status_code == 401 and denied.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")


def test_a_body_over_the_limit_is_refused_before_it_is_forwarded(front):
    big = {"model": "alpha", "messages": [{"role": "user", "content": "x" * (17 * 2**20)}]}
    assert post(front, "/v1/chat/completions", big).status_code == 413


# ---------------------------------------------------------------- an upstream that is gone, hung or dead

def front_to(url: str, tmp: Path, timeout: float = 600) -> Server:
    route = Upstream(url, {"m": "m"}, timeout=timeout, connect_timeout=2, label="vLLM")
    return Server([], port=0, state_dir=tmp, quiet=True, upstream=route).start()


def test_an_upstream_that_is_not_there_is_a_502(tmp_path):
    srv = front_to(f"http://127.0.0.1:{free_port()}", tmp_path)
    try:
        for path, body in (("/v1/chat/completions", {"model": "m", "messages": USER}),
                           ("/v1/completions", {"model": "m", "prompt": "x", "stream": True})):
            reply = httpx.post(srv.url + path, json=body)
            error = reply.json()["error"]
            assert reply.status_code == 502 and error["code"] == "upstream_unreachable"
            assert error["type"] == "server_error" and "vLLM (http://127.0.0.1:" in error["message"]
        assert httpx.get(srv.url + "/v1/models").status_code == 502
        assert httpx.get(srv.url + "/health").status_code == 503
    finally:
        srv.stop()


def test_an_upstream_that_never_answers_is_a_504_after_the_timeout(tmp_path):
    with socket.socket() as hung:  # accepts connections (the kernel does) and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        srv = front_to(f"http://127.0.0.1:{hung.getsockname()[1]}", tmp_path, timeout=1)
        try:
            started = time.monotonic()
            reply = httpx.post(srv.url + "/v1/chat/completions", json={"model": "m", "messages": USER}, timeout=30)
            assert reply.status_code == 504 and reply.json()["error"]["code"] == "upstream_timeout"
            assert time.monotonic() - started < 10
        finally:
            srv.stop()


def test_an_upstream_that_dies_is_a_503_and_the_console_says_so(tiny_model_dir, tmp_path):
    said = []
    child = lmtune_child([tiny_model_dir], tmp_path, "k", said.append, label="vLLM")
    route = Upstream(child.url, {"base": tiny_model_dir.name}, api_key="k", label="vLLM")
    child.on_exit = route.mark_dead
    srv = Server([], port=0, state_dir=tmp_path / "front", quiet=True, upstream=route).start()
    body = {"model": "base", "messages": USER, "max_tokens": 2}
    try:
        assert httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
        os.killpg(child.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while route.dead is None and time.monotonic() < deadline:
            time.sleep(0.1)
        reply = httpx.post(srv.url + "/v1/chat/completions", json=body)
        assert reply.status_code == 503 and "vLLM is not running (vLLM exited with code -9" in reply.text
        assert any(line.startswith("error: vLLM exited with code -9") for line in said), said
        # without the watcher, the same stopped server is a 502
        plain = front_to(child.url, tmp_path / "plain")
        try:
            assert httpx.post(plain.url + "/v1/chat/completions", json={"model": "m", "messages": USER}
                              ).status_code == 502
        finally:
            plain.stop()
    finally:
        srv.stop()
        child.stop()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by whoever adopted it, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_stopping_the_child_stops_its_whole_process_group(tmp_path):
    script = ("import subprocess, sys, time\n"
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
              "print('grandchild', p.pid, flush=True)\ntime.sleep(120)")
    log = tmp_path / "c.log"
    child = ChildServer([sys.executable, "-c", script], f"http://127.0.0.1:{free_port()}", log).start()
    deadline = time.monotonic() + 30
    while "grandchild" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchild = int(log.read_text().split()[1])
    assert alive(grandchild)
    child.stop(grace=5)
    assert child.process.poll() is not None
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(grandchild)  # vLLM's engine processes go with it


def test_a_child_that_exits_while_starting_is_one_error_quoting_its_log(tmp_path):
    argv = [sys.executable, "-c", "print('torch.OutOfMemoryError: CUDA out of memory'); raise SystemExit(3)"]
    child = ChildServer(argv, f"http://127.0.0.1:{free_port()}", tmp_path / "vllm.log").start()
    with pytest.raises(UserError) as caught:
        child.wait_ready(timeout=60)
    assert caught.value.source == "vLLM" and "exit code 3" in caught.value.message
    assert "CUDA out of memory" in caught.value.message and str(tmp_path / "vllm.log") in caught.value.message


def test_a_child_that_never_answers_is_stopped_after_the_timeout(tmp_path):
    child = ChildServer([sys.executable, "-c", "import time; time.sleep(120)"], f"http://127.0.0.1:{free_port()}",
                        tmp_path / "vllm.log").start()
    with pytest.raises(UserError, match=r"did not answer .*/health within 1 s"):
        child.wait_ready(timeout=1)
    assert child.process.poll() is not None
