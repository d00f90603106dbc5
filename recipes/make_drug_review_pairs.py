"""Build preference pairs for recipes/drug-review-relevance-dpo.yaml from the packaged drug reviews.

For each review with a named condition: prompt "Write a patient review of <drug> for <condition>.",
chosen = that review, rejected = a review (seeded pick) about a different condition. Writes
data/drug-review-pairs-{train,test}.jsonl from the packaged train and test splits.

    python recipes/make_drug_review_pairs.py [--out data]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from lmtune import assets


def pairs(records: list[dict], seed: int) -> list[dict]:
    rng = random.Random(seed)
    usable = [r for r in records if str(r.get("condition") or "").strip() and str(r.get("review") or "").strip()]
    out = []
    for r in usable:
        others = [o for o in usable if o["condition"] != r["condition"]]
        if not others:
            continue
        out.append({"prompt": f"Write a patient review of {r['drugName']} for {r['condition']}.",
                    "chosen": r["review"].strip(), "rejected": rng.choice(others)["review"].strip()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        path = assets.dataset_path("drug-reviews", split)
        records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        rows = pairs(records, seed=42)
        target = args.out / f"drug-review-pairs-{split}.jsonl"
        target.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{len(rows)} pairs -> {target}")


if __name__ == "__main__":
    main()
