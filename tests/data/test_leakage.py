"""Leakage between train and validation/test: near-copies with light edits are caught at the defaults,
and texts that merely share words are not."""

from __future__ import annotations

import random

import pytest
from conftest import write_jsonl

from lmtune.data import leakage
from lmtune.data import prepare as data_stage
from lmtune.data.formats import load_examples
from lmtune.recipe import recipe_from_dict

LABELS = ["ham", "spam"]
SHORT = "are you coming to the party tonight or not"  # 9 words, like an SMS
MEDIUM = ("the pharmacy called to say your prescription is ready and you can pick it up any time before six "
          "tomorrow evening at the counter near the entrance")  # 27 words
LONG = " ".join(f"{SHORT} {MEDIUM} and then sentence {i} goes on" for i in range(3))  # 117 words


def _edit(text: str, kind: str) -> str:
    words = text.split()
    if kind == "case":
        words[2] = words[2].upper()
    elif kind == "punct":
        words[1] += ","
        words[-1] += "!"
    elif kind == "append":
        words.append("thanks")
    elif kind == "delete":
        del words[3]
    elif kind == "replace":
        words[3] = "zebra"
    elif kind == "two_edits":
        words[3] = "zebra"
        words.append("thanks")
    elif kind == "issue_example":  # the report: one word upper-cased plus "!" and a word appended
        words[1] = words[1].upper()
        words[-1] += "!"
        words.append("please")
    return " ".join(words)


def _background(n: int = 200, seed: int = 0) -> list[str]:
    """Unrelated short texts drawn from a small vocabulary, so they share many words with each other."""
    rng = random.Random(seed)
    vocab = ("you are coming to the party tonight or not call me later when get home ok see there "
             "pick up it any time before evening at counter").split()
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(6, 12))) for _ in range(n)]


def _examples(texts: list[str], name: str):
    rows = [(f"{name}.jsonl:{i + 1}", {"text": t, "label": LABELS[i % 2]}) for i, t in enumerate(texts)]
    return load_examples(rows, {}, "classification", LABELS)


def _find(train_texts: list[str], held_texts: list[str], threshold: float = leakage.DEFAULT_THRESHOLD):
    return leakage.find(_examples(train_texts, "train"), leakage.keys(_examples(held_texts, "test")), threshold)


@pytest.mark.parametrize("length", ["short", "medium", "long"])
@pytest.mark.parametrize("kind", ["case", "punct", "append", "delete", "replace", "two_edits", "issue_example"])
def test_light_edit_of_a_test_item_in_train_is_caught_at_the_defaults(kind, length):
    original = {"short": SHORT, "medium": MEDIUM, "long": LONG}[length]
    train = _background() + [_edit(original, kind)]
    found = _find(train, [original, "something else entirely different"])
    assert list(found) == [len(train) - 1], found
    hit = found[len(train) - 1]
    assert hit["matches"] == "test.jsonl:1" and hit["kind"] in ("exact", "near")


def test_texts_sharing_words_but_not_copies_are_not_flagged():
    background = _background(300, seed=1)
    held = _background(100, seed=2)
    assert _find(background, held) == {}


def test_a_short_text_inside_a_long_one_is_not_a_leak():
    assert _find(["ok see you there", f"ok {MEDIUM}"], ["Ok."]) == {}
    assert _find(["ok see you there", f"{SHORT} {MEDIUM}"], [SHORT]) == {}


def test_texts_differing_in_a_number_are_not_copies():
    assert _find(["what is 12 plus 30", "the movie was great and i loved it #4"],
                 ["what is 12 plus 31", "the movie was great and i loved it #3"]) == {}
    assert set(_find(["call 0800 123 now for your prize today"], ["Call 0800 123 now for your prize!"])) == {0}


def test_threshold_is_configurable():
    train = _background() + [_edit(SHORT, "two_edits")]
    assert len(_find(train, [SHORT], threshold=0.8)) == 1
    assert _find(train, [SHORT], threshold=0.99) == {}


def test_data_prepare_drops_planted_short_edits_from_train(tmp_path):
    rng = random.Random(3)
    test = [" ".join(rng.choice(["call", "me", "when", "you", "get", "home", "ok", "love", "see", "soon",
                                 "tonight", "later", "dinner", "work", "bus", "late"]) for _ in range(7))
            + f" code{i}" for i in range(15)]
    planted = [_edit(t, "issue_example") for t in test]
    train = _background(120) + planted
    train_path = write_jsonl(tmp_path / "train.jsonl",
                             [{"text": t, "label": LABELS[i % 2]} for i, t in enumerate(train)])
    test_path = write_jsonl(tmp_path / "test.jsonl", [{"text": t, "label": "ham"} for t in test])
    recipe = recipe_from_dict({"name": "x", "model": "m", "task": {"labels": LABELS},
                               "data": {"train": str(train_path), "test": str(test_path),
                                        "split": {"validation": 0.0, "test": 0.0}}})
    prepared = data_stage.prepare(recipe.data, "classification", LABELS, 0)
    kept = {ex.record["text"].casefold() for ex in prepared.splits["train"]}
    assert not kept & {p.casefold() for p in planted}
    assert prepared.report["leakage"]["exact"] + prepared.report["leakage"]["near"] == 15


def test_leak_check_runs_whatever_the_dedup_setting(tmp_path):
    train = _background(60) + [_edit(SHORT, "append")]
    train_path = write_jsonl(tmp_path / "train.jsonl", [{"text": t, "label": "ham"} for t in train])
    test_path = write_jsonl(tmp_path / "test.jsonl", [{"text": SHORT, "label": "ham"}])
    recipe = recipe_from_dict({"name": "x", "model": "m", "task": {"labels": LABELS},
                               "data": {"train": str(train_path), "test": str(test_path),
                                        "split": {"validation": 0.0, "test": 0.0, "stratify": False},
                                        "clean": {"dedup": "exact"}}})
    prepared = data_stage.prepare(recipe.data, "classification", LABELS, 0)
    assert prepared.report["leakage"]["near"] == 1
