"""Serving under hostile traffic: normal chat requests mixed with every hostile request of the test table.

Starts ``lmtune serve`` in its own process on the tiny random model of the tests (built from config,
offline, seconds), uploads one training file, then sends ``--normal`` ordinary chat requests and
``--hostile`` requests from ``HOSTILE`` in ``tests/test_hostile_serve.py`` (by default every one of
the table once: NaN, huge numbers, wrong types, nested JSON, garbage multipart, bad keys, ...), all
at once, one thread each. Each
round also sends the same normal requests alone, for their latency without hostile company; the
rounds alternate (alone, mixed, alone, ...) so that other load on the machine, which moves these
latencies a lot on a small shared machine, falls on both alike. Prints normal requests ok/failed,
hostile responses by status code, the count of responses >= 500, and p50/p95 latency of the
normal requests over all rounds; then one JSON object. Exits 1 if a normal request failed or
anything got a 5xx.

Usage: python benchmarks/serve_hostile.py [--normal 32] [--hostile N] [--max-tokens 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _server import free_port, wait_healthy  # noqa: E402
from test_hostile_serve import HOSTILE, KEY, Ctx, send, upload_context  # noqa: E402  the table the tests use
from tiny import save_tiny  # noqa: E402

SERVE = ("import sys; from lmtune.serve.http.server import serve; "
         "serve([sys.argv[1]], port=int(sys.argv[2]), state_dir=sys.argv[3], api_key=sys.argv[4], quiet=True, "
         "precision='fp32')")


def start_server(model: Path, state: Path) -> tuple[subprocess.Popen, str]:
    """The server in a process of its own (its CPU work does not share this process's GIL)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(model), str(port), str(state), KEY],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, wait_healthy(proc, f"http://127.0.0.1:{port}", timeout=300)


def normal_request(i: int, max_tokens: int):
    """An ordinary chat request; greedy, sampled and temperature 1e-40 in turn."""
    body = {"messages": [{"role": "user", "content": f"the movie was great, review {i}"}], "max_tokens": max_tokens,
            "temperature": [0, 1.0, 1e-40][i % 3], "seed": i}
    return lambda c: {"json": {"model": c.model, **body}}


def fire(url: str, ctx: Ctx, requests: list[tuple[str, str, object]]) -> list[dict]:
    """Send every ``(kind, name, build)`` at once, one thread each; status (599: no response) and latency of each."""
    results: list[dict] = [{} for _ in requests]
    barrier = threading.Barrier(len(requests))

    def one(i: int, kind: str, name: str, build) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            barrier.wait()
            started = time.perf_counter()
            try:
                response = send(client, ctx, build)
                status, ok = response.status_code, response.status_code == 200 and "choices" in response.json()
            except (httpx.HTTPError, ValueError) as exc:
                status, ok = 599, False
                print(f"  {kind} {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            results[i] = {"kind": kind, "name": name, "status": status, "ok": ok,
                          "seconds": time.perf_counter() - started}

    threads = [threading.Thread(target=one, args=(i, *r)) for i, r in enumerate(requests)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def summary(results: list[dict]) -> dict:
    normal = [r for r in results if r["kind"] == "normal"]
    hostile = [r for r in results if r["kind"] == "hostile"]
    latencies = sorted(r["seconds"] for r in normal if r["ok"]) or [float("nan")]
    return {"normal_ok": sum(r["ok"] for r in normal), "normal_failed": sum(not r["ok"] for r in normal),
            "hostile_by_status": dict(sorted(collections.Counter(str(r["status"]) for r in hostile).items())),
            "responses_5xx": sum(r["status"] >= 500 for r in results),
            "normal_latency_p50_s": round(statistics.median(latencies), 3),
            "normal_latency_p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 3),
            "hostile_5xx_names": sorted({r["name"] for r in hostile if r["status"] >= 500})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--normal", type=int, default=32, help="normal chat requests")
    parser.add_argument("--hostile", type=int, default=len(HOSTILE),
                        help="hostile requests (default: every body of the table once; more cycle it)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="alone/mixed rounds (latencies are pooled)")
    args = parser.parse_args()
    load_before = os.getloadavg()  # other work on the machine skews latency; it is recorded with it
    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny(Path(tmp) / "tiny")
        proc, url = start_server(model, Path(tmp) / "state")
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                ctx = upload_context(client, model.name)
            normal = [("normal", f"n{i}", normal_request(i, args.max_tokens)) for i in range(args.normal)]
            hostile = [("hostile", *HOSTILE[i % len(HOSTILE)]) for i in range(args.hostile)]
            fire(url, ctx, normal[:2])  # warm-up, not counted
            alone_results, mixed_results = [], []
            for _ in range(args.rounds):
                alone_results += fire(url, ctx, normal)
                mixed_results += fire(url, ctx, normal + hostile)
            alone, mixed = summary(alone_results), summary(mixed_results)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    for name, s in (("normal alone", alone), ("normal + hostile", mixed)):
        print(f"== {name}: normal ok {s['normal_ok']}, failed {s['normal_failed']}; hostile by status "
              f"{s['hostile_by_status'] or '-'}; responses >= 500: {s['responses_5xx']}; normal latency "
              f"p50 {s['normal_latency_p50_s']:.2f} s, p95 {s['normal_latency_p95_s']:.2f} s", file=sys.stderr)
    ok = mixed["normal_failed"] == 0 and mixed["responses_5xx"] == 0 and alone["responses_5xx"] == 0
    print(json.dumps({"benchmark": "serve_hostile", "normal": args.normal, "hostile": args.hostile,
                      "rounds": args.rounds, "hostile_table_size": len(HOSTILE), "max_tokens": args.max_tokens,
                      "cpu_count": os.cpu_count(),
                      "load_average_before_after": [load_before[0], os.getloadavg()[0]], "alone": alone,
                      "mixed": mixed, "ok": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
