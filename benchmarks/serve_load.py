"""Serving under load: the demo's fine-tuned model behind ``lmtune serve``, called with the openai client.

Two servers are measured in turn, each its own process: the default (continuous batching, up to 32
sequences per step) and ``--max-batch-size 1`` (requests handled one after another). Each gets
the same chat requests, built from the run's held-out reviews with its training prompt, at
concurrency 1, 8 and 32 (``--requests`` each), then one burst of 64 simultaneous requests that
must all succeed. Prints a table, then one JSON object: requests/s, generated tokens/s and
latency per level, and the batched/serial speed-up at each concurrency.

Usage: python benchmarks/serve_load.py [RUN_DIR] [--requests 64] [--max-tokens 32]
(RUN_DIR defaults to runs/demo, written by ``lmtune demo``.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai
from _server import free_port, wait_healthy

from lmtune.data import io
from lmtune.predict_file import prompter_for
from lmtune.run_dir import run_final

LEVELS = (1, 8, 32)
BURST = 64


def load_messages(run: Path, n: int) -> list[list[dict]]:
    """Chat messages for ``n`` requests: the run's held-out records through its own prompt template."""
    final = run_final(run)
    prompter = prompter_for(final)
    for split in ("test", "validation", "train"):
        path = run / "data" / f"{split}.jsonl"
        if path.exists():
            rows = io.read_rows(path, n)
            return [prompter(record, source)["messages"] for source, record in rows]
    raise SystemExit(f"error: {run}/data has no test, validation or train split to build requests from")


def start_server(run: Path, state: Path, max_batch: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "lmtune.cli", "serve", str(run), "--port", str(port), "--state-dir", str(state),
           "--max-batch-size", str(max_batch), "--max-queue", "1024", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return proc, wait_healthy(proc, f"http://127.0.0.1:{port}", timeout=600)


async def measure(url: str, model: str, requests: list[list[dict]], concurrency: int, max_tokens: int) -> dict:
    """Send ``requests`` with at most ``concurrency`` in flight; throughput and latency as measured."""
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
    gate = asyncio.Semaphore(concurrency)
    latencies, tokens, failures = [], 0, []

    async def one(messages):
        nonlocal tokens
        async with gate:
            started = time.perf_counter()
            try:
                reply = await client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                             temperature=0)
            except openai.APIError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                return
            latencies.append(time.perf_counter() - started)
            tokens += reply.usage.completion_tokens

    started = time.perf_counter()
    await asyncio.gather(*(one(m) for m in requests))
    seconds = time.perf_counter() - started
    await client.close()
    ordered = sorted(latencies) or [float("nan")]
    return {"concurrency": concurrency, "requests": len(requests), "succeeded": len(latencies),
            "failed": len(failures), "seconds": round(seconds, 2),
            "requests_per_s": round(len(latencies) / seconds, 2), "generated_tokens": tokens,
            "generated_tokens_per_s": round(tokens / seconds, 1),
            "latency_p50_s": round(statistics.median(ordered), 3),
            "latency_p95_s": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "first_failure": failures[0] if failures else None}


def run_server_levels(run: Path, max_batch: int, requests: list[list[dict]], max_tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as state:
        proc, url = start_server(run, Path(state), max_batch)
        try:
            model = run.name
            asyncio.run(measure(url, model, requests[:2], 2, max_tokens))  # warm-up, not counted
            out = {f"c{c}": asyncio.run(measure(url, model, requests, c, max_tokens)) for c in LEVELS}
            out["burst64"] = asyncio.run(measure(url, model, (requests * 2)[:BURST], BURST, max_tokens))
            return out
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="runs/demo", type=Path)
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    if run_final(args.run) is None:
        print(f"error: {args.run}: no finished run here (final/lmtune.json missing); run `lmtune demo` first or "
              "give a run directory", file=sys.stderr)
        sys.exit(2)
    load_before = os.getloadavg()  # other work on the machine skews every number; it is recorded with them
    requests = load_messages(args.run, args.requests)
    requests = (requests * (args.requests // max(len(requests), 1) + 1))[:args.requests]
    results = {}
    for name, max_batch in (("batched", 32), ("serial", 1)):
        print(f"== {name} server (--max-batch-size {max_batch})", file=sys.stderr, flush=True)
        results[name] = run_server_levels(args.run, max_batch, requests, args.max_tokens)
        for level, r in results[name].items():
            print(f"  {level:8s} {r['succeeded']}/{r['requests']} ok  {r['requests_per_s']:7.2f} req/s  "
                  f"{r['generated_tokens_per_s']:8.1f} tok/s  p50 {r['latency_p50_s']:.2f} s  "
                  f"p95 {r['latency_p95_s']:.2f} s", file=sys.stderr, flush=True)
    speedup = {f"c{c}": round(results["batched"][f"c{c}"]["requests_per_s"]
                              / max(results["serial"][f"c{c}"]["requests_per_s"], 1e-9), 2) for c in LEVELS}
    all_ok = all(r["failed"] == 0 for side in results.values() for r in side.values())
    print(json.dumps({"benchmark": "serve_load", "run": str(args.run), "max_tokens": args.max_tokens,
                      "cpu_count": os.cpu_count(), "load_average_before_after": [load_before[0], os.getloadavg()[0]],
                      "results": results, "batched_over_serial_requests_per_s": speedup,
                      "all_succeeded": all_ok}))
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
