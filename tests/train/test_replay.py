"""Replay (``lmtune.train.replay``): general text mixed into training at a ratio, deterministic and even, and
what it is for: less forgetting of general text after a narrow fine-tune."""

import copy
import random

import pytest
from conftest import write_jsonl
from tiny import SENTENCES, build_model

from lmtune.data.encode import Encoder, pack_blocks
from lmtune.errors import UserError
from lmtune.evaluate import forgetting
from lmtune.evaluate.forgetting import Probe
from lmtune.train import loop, objectives, replay

pytestmark = pytest.mark.usefixtures("one_thread")


def _settings(**kw):
    base = {"learning_rate": 1e-2, "batch_size": 8, "max_steps": 40, "eval_every": None, "log_every": 10,
            "precision": "fp32", "warmup_ratio": 0.0, "seed": 0}
    return loop.Settings(**{**base, **kw})


def _documents(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(SENTENCES) for _ in range(4)) for _ in range(n)]


def test_replay_reduces_forgetting_of_general_text(tok, tmp_path):
    """Pre-train on general text, fine-tune hard on a narrow task with and without replay."""
    enc = Encoder(tok, 64)
    general = pack_blocks(enc, [([], d) for d in _documents(40, seed=0)], 16)
    probe = Probe("general", "perplexity", "-", _documents(20, seed=1))
    model = build_model(len(tok), seed=0)
    loop.train(model, general, [], _settings(max_steps=100, learning_rate=2e-2), tmp_path / "pre", tok.pad_token_id,
               quiet=True)
    base_state = copy.deepcopy(model.state_dict())
    base = forgetting.measure(model, tok, [probe], max_length=64, quiet=True)
    rng = random.Random(0)
    task = [enc.encode([{"role": "user", "content": rng.choice(SENTENCES)}], "neutral neutral neutral")
            for _ in range(64)]
    task_loss_before = objectives.evaluate_loss(model, task, 8, tok.pad_token_id, "cpu")
    changes, task_losses = {}, {}
    for ratio in (0.0, 0.3):
        model.load_state_dict(base_state)
        data = replay.mix(task, general, ratio, seed=0)
        loop.train(model, data, [], _settings(), tmp_path / f"ratio-{ratio}", tok.pad_token_id, quiet=True)
        after = forgetting.measure(model, tok, [probe], max_length=64, quiet=True)
        changes[ratio] = forgetting.compare(base, after)["general"]
        task_losses[ratio] = objectives.evaluate_loss(model, task, 8, tok.pad_token_id, "cpu")
    print({r: (round(c["before"], 3), round(c["after"], 3), round(c["relative_change"], 3))
           for r, c in changes.items()}, {"task loss before": round(task_loss_before, 3), **task_losses})
    assert changes[0.0]["forgot"] and changes[0.0]["relative_change"] > 0.5
    assert changes[0.3]["relative_change"] < changes[0.0]["relative_change"] / 2
    # Replay did not stop the task from being learned.
    assert task_losses[0.3] < task_loss_before / 10


def test_mix_ratio_arithmetic():
    train, general = [f"t{i}" for i in range(90)], [f"g{i}" for i in range(50)]
    mixed = replay.mix(train, general, 0.1, seed=0)
    assert len(mixed) == 100 and mixed[:90] == train
    assert sum(x.startswith("g") for x in mixed) / len(mixed) == pytest.approx(0.1)
    assert len(set(mixed[90:])) == 10  # no repeats while there are enough general examples
    assert replay.mix(train, general, 0.0, seed=0) == train
    assert len(replay.mix(train[:7], general, 0.5, seed=0)) == 14


def test_mix_is_seeded():
    train, general = [f"t{i}" for i in range(90)], [f"g{i}" for i in range(50)]
    mixed = replay.mix(train, general, 0.1, seed=0)
    assert replay.mix(train, general, 0.1, seed=0) == mixed
    assert replay.mix(train, general, 0.1, seed=1) != mixed


def test_mix_repeats_a_short_general_set_evenly():
    mixed = replay.mix(list(range(30)), ["a", "b", "c"], 0.25, seed=0)  # 10 general examples needed
    extra = mixed[30:]
    assert len(extra) == 10 and sorted(extra.count(g) for g in "abc") == [3, 3, 4]


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1, "0.1"])
def test_mix_refuses_a_ratio_outside_0_1(ratio):
    with pytest.raises(UserError) as err:
        replay.mix([1, 2], [3], ratio, seed=0)
    assert err.value.source == "training.replay.ratio"


def test_mix_needs_general_examples():
    with pytest.raises(UserError) as err:
        replay.mix([1, 2], [], 0.5, seed=0)
    assert err.value.source == "training.replay.data"


def test_load_general_packs_text_blocks(tok, tmp_path):
    enc = Encoder(tok, 64)
    docs = _documents(6, seed=2)
    path = write_jsonl(tmp_path / "general.jsonl", [{"text": d} for d in docs])
    blocks = replay.load_general(path, enc, 8)
    assert blocks == pack_blocks(enc, [([], d) for d in docs], 8)
    assert all(b.labels[1:] == b.input_ids[1:] and b.labels[0] == -100 and len(b.input_ids) <= 8 for b in blocks)
    assert replay.load_general(path, enc, 8, limit=2) == pack_blocks(enc, [([], d) for d in docs[:2]], 8)


def test_load_general_names_a_line_that_is_not_text(tok, tmp_path):
    enc = Encoder(tok, 64)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine"}, {"prompt": "x", "completion": "y"}])
    with pytest.raises(UserError) as err:
        replay.load_general(bad, enc, 8)
    assert err.value.source == f"{bad}:2"
