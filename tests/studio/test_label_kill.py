"""No label is lost: annotators label through the real ``lmtune studio`` process, it is killed with SIGKILL
mid-stream, and a new studio over the same folder has every answer that the killed one acknowledged."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2 as httpx
from conftest import sentiment_records, write_jsonl

TOKEN = "owner-secret-token"
OWNER = {"Authorization": f"Bearer {TOKEN}", "X-Lmtune-Studio": "1"}
LABELS = ["negative", "neutral", "positive"]


def _start(runs: Path) -> tuple[subprocess.Popen, str]:
    """``lmtune studio`` in a process of its own; returns it and its address once it serves."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmtune.cli", "studio", "--runs", str(runs), "--port", str(port),
                             "--token", TOKEN, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            env=env)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while True:
        assert proc.poll() is None, f"the studio ended before serving (exit {proc.returncode})"
        assert time.monotonic() < deadline, "the studio did not answer within 120 s"
        try:
            if httpx.get(url + "/api/label/queues", headers=OWNER, timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)


def _label(url: str, token: str, acknowledged: list[tuple[int, str]], stop: threading.Event) -> None:
    """Label as fast as the server answers; keep each answer the server acknowledged (HTTP 200)."""
    headers = {"X-Lmtune-Studio": "1", "X-Lmtune-Annotator": token}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
            shown = client.get("/api/label/q/next").json()
            n = 0
            while not stop.is_set() and shown.get("record"):
                index, n = shown["record"]["index"], n + 1
                reply = client.post("/api/label/q/answer", json={"index": index, "label": LABELS[n % 3]})
                if reply.status_code == 200:
                    acknowledged.append((index, LABELS[n % 3]))
                shown = reply.json()
    except (httpx.TransportError, json.JSONDecodeError):
        return  # the server died under us: what it acknowledged before is what must survive


def test_every_acknowledged_label_survives_a_sigkill(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    write_jsonl(runs / "pool.jsonl", [{"text": r["review"]} for r in sentiment_records(600)])
    proc, url = _start(runs)
    try:
        owner = httpx.Client(base_url=url, headers=OWNER, timeout=30)
        assert owner.post("/api/label/queues", json={"name": "q", "pool": "pool.jsonl", "labels": LABELS,
                                                     "overlap": 0.3}).status_code == 201
        tokens = {f"a{i}": owner.post("/api/annotators", json={"name": f"a{i}"}).json()["token"] for i in range(3)}
        acknowledged: dict[str, list[tuple[int, str]]] = {name: [] for name in tokens}
        stop = threading.Event()
        workers = [threading.Thread(target=_label, args=(url, tokens[name], acknowledged[name], stop))
                   for name in tokens]
        for worker in workers:
            worker.start()
        # 60 labels in all, and at least one from every annotator (a thread can be starved on busy cores).
        while sum(map(len, acknowledged.values())) < 60 or not all(acknowledged.values()):
            assert all(w.is_alive() for w in workers), "an annotator ran out of records before the kill"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # while the annotators are still sending answers
        proc.wait(30)
        stop.set()
        for worker in workers:
            worker.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    proc, url = _start(runs)
    try:
        for name, token in tokens.items():
            mine = httpx.get(f"{url}/api/label/q/mine", headers={"X-Lmtune-Annotator": token}, timeout=30).json()
            stored = {(a["index"], a["label"]) for a in mine["answers"]}
            assert set(acknowledged[name]) <= stored, f"{name} lost {set(acknowledged[name]) - stored}"
            assert len(acknowledged[name]) > 0
    finally:
        proc.kill()
        proc.wait()
