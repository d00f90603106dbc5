"""Labelling throughput: 5 annotators labelling one queue at once, time from keypress to the next record.

Issue #19's target: with 5 simulated annotators labelling concurrently, p95 of the time from a keypress to
the next record on screen under 100 ms. A keypress on the labelling page is one request,
``POST /api/label/<queue>/answer``, whose response carries the next record (``label.js`` draws it from that
response), so the time measured here is that request's round trip over a real socket to the real server
(``StudioServer``, uvicorn, the SQLite database in WAL mode with ``synchronous=FULL``), each answer committed
before the response. The browser's drawing of the record is not included (a few DOM nodes).

Builds a pool of ``--records`` synthetic reviews in a temporary runs folder, starts the studio, creates a
queue (``--overlap`` of the records go to two annotators) and ``--annotators`` annotators through the owner's
API, then runs one thread per annotator, each with its own keep-alive connection and token, labelling until
it has given ``--answers`` answers (every 10th an undo and every 25th a skip, as a person would), reading each
record for ``--think-ms`` on average first (a fast annotator: 0.5 s; ``--think-ms 0`` is a stress test, every
annotator pressing keys as fast as the server answers). Prints p50,
p95 and max, answers per second overall, the load average at the start, and PASS/FAIL against
``--threshold-ms``; the last line is one JSON object. Exits 1 on FAIL.

Usage: python benchmarks/label_throughput.py [--annotators 5] [--answers 200] [--records 2000]
       [--overlap 0.2] [--think-ms 500] [--threshold-ms 100]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx

from lmtune.studio.server import StudioServer

LABELS = ["negative", "neutral", "positive"]
WORDS = ("the this drug pill dose pain sleep headache nausea anxiety weight mood energy doctor week month helped "
         "worked stopped started better worse great terrible fine side effects really not never again after").split()
WRITE = {"X-Lmtune-Studio": "1"}


def write_pool(path: Path, count: int) -> None:
    rng = random.Random(0)
    with path.open("w") as out:
        for i in range(count):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90)))
            out.write(json.dumps({"id": str(i), "text": text, "prelabel": rng.choice(LABELS),
                                  "confidence": round(rng.random(), 3), "rank": i + 1}) + "\n")


def setup(url: str, annotators: int, overlap: float) -> list[str]:
    """The queue and the annotators, through the owner's API; the annotators' tokens."""
    with httpx.Client(base_url=url, headers=WRITE, timeout=60) as owner:
        created = owner.post("/api/label/queues", json={"name": "bench", "pool": "pool.jsonl", "labels": LABELS,
                                                       "guidelines": "Pick the review's sentiment.",
                                                       "overlap": overlap})
        created.raise_for_status()
        tokens = []
        for i in range(annotators):
            added = owner.post("/api/annotators", json={"name": f"annotator-{i}"})
            added.raise_for_status()
            tokens.append(added.json()["token"])
    return tokens


def annotate(url: str, token: str, answers: int, seed: int, times: list[float], errors: list[str],
             think_s: float = 0.0) -> None:
    """One annotator: read for about ``think_s``, label, now and then undo or skip, timing each keypress's request."""
    rng = random.Random(seed)
    headers = {**WRITE, "X-Lmtune-Annotator": token}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        shown = client.get("/api/label/bench/next").json()
        for n in range(1, answers + 1):
            record = shown.get("record")
            if record is None:
                return
            if think_s:
                time.sleep(rng.uniform(0.5, 1.5) * think_s)
            started = time.perf_counter()
            if n % 10 == 0:
                reply = client.post("/api/label/bench/undo")
            else:
                body = {"index": record["index"], "kind": "skip" if n % 25 == 0 else "label",
                        "label": rng.choice(LABELS)}
                reply = client.post("/api/label/bench/answer", json=body)
            times.append(time.perf_counter() - started)
            if reply.status_code != 200:
                errors.append(f"{reply.status_code}: {reply.text[:200]}")
                shown = client.get("/api/label/bench/next").json()
                continue
            shown = reply.json()


def measure(args: argparse.Namespace) -> dict:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="lmtune-label-bench-") as tmp:
        runs = Path(tmp) / "runs"
        runs.mkdir()
        write_pool(runs / "pool.jsonl", args.records)
        server = StudioServer(runs, port=0, quiet=True).start()
        try:
            tokens = setup(server.url, args.annotators, args.overlap)
            times: list[float] = []
            errors: list[str] = []
            threads = [threading.Thread(target=annotate, args=(server.url, token, args.answers, i, times, errors,
                                                                 args.think_ms / 1000))
                       for i, token in enumerate(tokens)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
        finally:
            server.stop()
    ms = sorted(t * 1000 for t in times)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return {"annotators": args.annotators, "think_ms": args.think_ms, "requests": len(ms), "errors": len(errors),
            "first_errors": errors[:3],
            "p50_ms": round(statistics.median(ms), 1), "p95_ms": round(p95, 1), "max_ms": round(ms[-1], 1),
            "answers_per_s": round(len(ms) / wall, 1), "load_avg_1m_at_start": round(load, 2),
            "cpu_count": os.cpu_count(), "threshold_ms": args.threshold_ms,
            "pass": p95 < args.threshold_ms and not errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotators", type=int, default=5)
    parser.add_argument("--answers", type=int, default=200, help="keypresses per annotator")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--think-ms", type=float, default=500.0,
                        help="mean reading time before each keypress (0: keys as fast as the server answers)")
    parser.add_argument("--threshold-ms", type=float, default=100.0)
    args = parser.parse_args()
    result = measure(args)
    print(f"{result['requests']} keypresses by {args.annotators} annotators at once: p50 {result['p50_ms']} ms, "
          f"p95 {result['p95_ms']} ms, max {result['max_ms']} ms, {result['answers_per_s']} answers/s "
          f"(load {result['load_avg_1m_at_start']} on {result['cpu_count']} cores), {result['errors']} errors")
    print("PASS" if result["pass"] else f"FAIL: p95 must be under {args.threshold_ms} ms with no errors")
    print(json.dumps(result))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
