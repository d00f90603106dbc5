"""Replay against catastrophic forgetting: general text mixed into the task's training data.

``training.replay: {data: general.jsonl, ratio: 0.1}`` makes 10% of the training examples blocks of
general text (``{"text"}`` records), as in continual-learning "experience replay" and the
pre-training mix of InstructGPT's PPO-ptx. Both kinds are ``Encoded`` examples, so the loop's
token objective trains on both: completion tokens only for the task, every token for the
general text.

The loss is averaged over target tokens, so general blocks weigh by their tokens, not their count:
a block of 512 tokens counts 256 times as much as a task example with a 2-token answer. The
block size is the caller's lever for that balance.
"""

from __future__ import annotations

import random
from pathlib import Path

from lmtune.data.encode import Encoded, Encoder, pack_blocks
from lmtune.data.io import iter_rows
from lmtune.errors import UserError


def load_general(path: str | Path, encoder: Encoder, block_size: int, limit: int | None = None) -> list[Encoded]:
    """General ``{"text"}`` documents as language-modelling blocks (every token a target).

    Args:
        path: a data file of ``{"text"}`` records.
        encoder: the run's encoder (documents get BOS/EOS as in continued pre-training; no chat template).
        block_size: tokens per block.
        limit: read at most this many documents.

    Raises:
        UserError: missing file or a record without a non-empty ``text`` (with file:line).
    """
    documents = []
    for source, record in iter_rows(path):
        text = record.get("text")
        if not isinstance(text, str) or not text.strip():
            raise UserError("replay data needs {\"text\": \"...\"} records of general text; this record has "
                            f"{'an empty text' if 'text' in record else sorted(record)}", source=source)
        documents.append(([], text))
        if limit is not None and len(documents) >= limit:
            break
    return pack_blocks(encoder, documents, block_size)


def replay_count(n_train: int, ratio: float) -> int:
    """General examples to add so they are ``ratio`` of ``n_train`` + them."""
    return round(ratio / (1 - ratio) * n_train)


def mix(train: list, general: list, ratio: float, seed: int) -> list:
    """``train`` followed by general examples that make up ``ratio`` of the result.

    General examples are drawn without replacement; when more are needed than there are, each is
    used as evenly often as possible (whole shuffled passes, then a sample), which is sampling with
    replacement without its uneven repeats. The loop shuffles the mix, so order does not matter.

    Args:
        train: the task's encoded training examples.
        general: encoded general text (:func:`load_general`).
        ratio: fraction of the result that is general, in [0, 1).
        seed: sampling seed.

    Raises:
        UserError: ratio outside [0, 1), or no general examples to draw from.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise UserError(f"ratio is the fraction of training examples that are general text; it must be in "
                        f"[0, 1), got {ratio!r}", source="training.replay.ratio")
    k = replay_count(len(train), ratio)
    if k and not general:
        raise UserError("the replay data produced no examples; give a file with some general text",
                        source="training.replay.data")
    rng = random.Random(seed)
    picked: list = []
    while k - len(picked) >= len(general) > 0:
        picked += rng.sample(general, len(general))
    picked += rng.sample(general, k - len(picked))
    return list(train) + picked
