"""SMS spam for an active-learning experiment: an unlabelled pool with hidden labels and a fixed test file.

Reads the shared copy of the SMS Spam Collection (``../shared/data/sms_spam`` beside the project; it is not part
of lmtune and is never copied into it) and writes the two files ``recipe.yaml`` and the command below read:

    <out>/pool.jsonl   a seeded, stratified sample of the training messages (default 1,000; 13% spam), each
                       with its true ``label``: the oracle that plays the labeller
    <out>/test.jsonl   a seeded, stratified sample of the test messages (default 400)

Usage::

    python examples/active-sms/prepare.py [--out data/sms-spam] [--pool 1000] [--test 400]
    lmtune active examples/active-sms/recipe.yaml --pool data/sms-spam/pool.jsonl --oracle label \\
        --budget 20 --rounds 4 --strategies entropy,random --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def stratified(rows: list[dict], n: int, rng: random.Random) -> list[dict]:
    """``n`` rows with each label in its share of ``rows`` (largest remainders), in a seeded order."""
    by_label = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    quotas = {label: n * len(members) // len(rows) for label, members in by_label.items()}
    for label in sorted(by_label, key=lambda k: -(n * len(by_label[k]) % len(rows)))[: n - sum(quotas.values())]:
        quotas[label] += 1
    picked = [row for label, members in sorted(by_label.items()) for row in rng.sample(members, quotas[label])]
    rng.shuffle(picked)
    return picked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=PROJECT.parent / "shared" / "data" / "sms_spam")
    parser.add_argument("--out", type=Path, default=PROJECT / "data" / "sms-spam")
    parser.add_argument("--pool", type=int, default=1000)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.source / "train.jsonl").is_file():
        print(f"error: {args.source}: no SMS Spam Collection here (train.jsonl, test.jsonl); pass --source DIR",
              file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, source, n in (("pool", "train", args.pool), ("test", "test", args.test)):
        rows = [json.loads(line) for line in (args.source / f"{source}.jsonl").read_text().splitlines()]
        picked = stratified(rows, min(n, len(rows)), rng)
        with open(args.out / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({"id": r["id"], "text": r["text"], "label": r["label"]}) + "\n" for r in picked)
        spam = sum(r["label"] == "spam" for r in picked)
        print(f"{args.out / (name + '.jsonl')}: {len(picked)} messages, {spam} spam")
    return 0


if __name__ == "__main__":
    sys.exit(main())
