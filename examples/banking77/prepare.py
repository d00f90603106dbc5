"""Banking77 with 20 intents, as a newcomer would set it up: 30 training queries per intent, every test query.

Reads the shared copy of Banking77 (``../shared/data/banking77`` beside the project; it is not part
of lmtune and is never copied into it) and writes the two files ``recipe.yaml`` reads:

    <out>/train.jsonl   30 queries for each of 20 intents (600), seeded
    <out>/test.jsonl    every test query of those intents (800 on the official split)

The 20 intents are a seeded pick of the 77. Usage::

    python examples/banking77/prepare.py [--out data/banking77-20] [--source ../shared/data/banking77]
    lmtune train examples/banking77/recipe.yaml
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=PROJECT.parent / "shared" / "data" / "banking77")
    parser.add_argument("--out", type=Path, default=PROJECT / "data" / "banking77-20")
    parser.add_argument("--intents", type=int, default=20)
    parser.add_argument("--per-intent", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.source / "train.jsonl").is_file():
        print(f"error: {args.source}: no Banking77 here (train.jsonl, test.jsonl, labels.json); "
              "pass --source DIR", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    intents = sorted(rng.sample(json.loads((args.source / "labels.json").read_text()), args.intents))
    by_intent = defaultdict(list)
    for row in _rows(args.source / "train.jsonl"):
        if row["label"] in intents:
            by_intent[row["label"]].append(row)
    train = [row for intent in intents for row in rng.sample(by_intent[intent], args.per_intent)]
    rng.shuffle(train)
    test = [row for row in _rows(args.source / "test.jsonl") if row["label"] in intents]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        with open(args.out / f"{name}.jsonl", "w") as fh:
            fh.writelines(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in rows)
    print(f"wrote {args.out}/train.jsonl ({len(train)}) and test.jsonl ({len(test)}); intents: {', '.join(intents)}")
    return 0


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    sys.exit(main())
