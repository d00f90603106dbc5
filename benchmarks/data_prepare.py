"""Data stage at scale: 1,000,000 synthetic short records through clean + near-dup + PII + split.

Target on 2 CPU cores: under 10 minutes and under 4 GB peak memory. Prints one JSON object last.
Usage: python benchmarks/data_prepare.py [N]
"""

from __future__ import annotations

import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from lmtune.data import prepare as data_stage
from lmtune.recipe import recipe_from_dict

WORDS = ("the a this drug medicine pill dose pain sleep headache nausea anxiety weight skin mood energy doctor "
         "week month day morning night helped worked stopped started better worse great terrible fine okay "
         "side effects really very not never always again after before my me i it was is".split())
LABELS = ["negative", "neutral", "positive"]


def synthetic(n: int, path: Path, seed: int = 0) -> None:
    """Short reviews; 2% near-duplicates of earlier ones, 1% carry an e-mail or phone number."""
    rng = random.Random(seed)
    texts = []
    with open(path, "w") as fh:
        for i in range(n):
            if texts and rng.random() < 0.02:
                words = rng.choice(texts).split()
                words[rng.randrange(len(words))] = rng.choice(WORDS)
                text = " ".join(words)
            else:
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 24))) + f" {i}"
                if len(texts) < 20000:
                    texts.append(text)
            if rng.random() < 0.01:
                text += rng.choice([f" mail me at user{i}@example.com",
                                    f" call 555-{i % 900 + 100:03d}-{i % 9000 + 1000:04d}"])
            fh.write(json.dumps({"text": text, "label": LABELS[i % 3]}) + "\n")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.jsonl"
        started = time.perf_counter()
        synthetic(n, path)
        print(f"generated {n:,} records ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
        recipe = recipe_from_dict({"name": "bench", "model": "m", "task": {"labels": LABELS},
                                   "data": {"train": str(path), "split": {"validation": 0.05, "test": 0.05},
                                            "clean": {"dedup": "exact+near", "pii": "mask"}}})
        started = time.perf_counter()
        prepared = data_stage.prepare(recipe.data, "classification", LABELS, 0)
        seconds = time.perf_counter() - started
    print(data_stage.steps_table(prepared.report), file=sys.stderr)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(json.dumps({"records": n, "prepare_seconds": round(seconds, 1), "peak_rss_gb": round(peak_gb, 2),
                      "counts": prepared.report["counts"],
                      "targets_met": seconds < 600 and peak_gb < 4}))


if __name__ == "__main__":
    main()
