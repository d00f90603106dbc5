"""The data workbench: cleaning, near-duplicates, PII, grouped split, leakage, contamination, augmentation."""

import json
import random
import subprocess
import sys

import pytest
import yaml
from conftest import write_jsonl

from lmtune.data import neardup, pii
from lmtune.data import prepare as data_stage
from lmtune.data.clean import normalise_text
from lmtune.errors import UserError
from lmtune.recipe import recipe_from_dict

LABELS = ["negative", "neutral", "positive"]
WORDS = ("drug pain sleep nausea weight doctor dose week month side effect anxiety headache better worse "
         "helped stopped started great terrible fine tired energy skin mood appetite").split()


def _review(rng, n=25):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _prepare(tmp_path, train, test=None, **data):
    train_path = write_jsonl(tmp_path / "train.jsonl", train)
    raw = {"name": "x", "model": "m", "task": {"labels": LABELS},
           "data": {"train": str(train_path), "split": {"validation": 0.1, "test": 0.0 if test else 0.2}, **data}}
    if test is not None:
        raw["data"]["test"] = str(write_jsonl(tmp_path / "test.jsonl", test))
    recipe = recipe_from_dict(raw)
    return data_stage.prepare(recipe.data, "classification", LABELS, 0)


def _corpus(n, seed=0):
    rng = random.Random(seed)
    return [{"text": _review(rng), "label": LABELS[i % 3]} for i in range(n)]


# --- cleaning ------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, clean", [
    ("I didn&#039;t like it", "I didn't like it"),
    ("double &amp;#039;escaped&amp;#039;", "double 'escaped'"),
    ("ｆｕｌｌｗｉｄｔｈ and ﬁne", "fullwidth and fine"),
    ("tab\there  and   spaces", "tab here and spaces"),
    ("control\x00\x07 chars\u200b gone", "control chars gone"),
    ("  line one \r\n\r\n\r\n\r\nline two  ", "line one\n\nline two"),
])
def test_normalise_text(raw, clean):
    assert normalise_text(raw) == clean


def test_labels_are_normalised_and_mapped_and_unknown_ones_named(tmp_path):
    rows = _corpus(30)
    rows[0]["label"], rows[1]["label"], rows[2]["label"] = " Positive ", "NEGATIVE", "pos"
    prepared = _prepare(tmp_path, rows, clean={"label_map": {"pos": "positive"}})
    labels = {ex.record["label"] for exs in prepared.splits.values() for ex in exs}
    assert labels == set(LABELS)
    rows[3]["label"] = "great"
    with pytest.raises(UserError, match="not one of task.labels") as info:
        _prepare(tmp_path, rows, clean={"label_map": {"pos": "positive"}})
    assert info.value.source.endswith("train.jsonl:4")


def test_length_filters_drop_and_count(tmp_path):
    rows = _corpus(30)
    rows[0]["text"], rows[1]["text"] = "ok", "x " * 3000
    prepared = _prepare(tmp_path, rows, clean={"min_chars": 5, "max_chars": 2000})
    step = next(s for s in prepared.report["steps"] if s["step"].startswith("length filter"))
    assert (step["too_short"], step["too_long"], step["records"]) == (1, 1, 28)


def test_exact_duplicates_with_different_labels_are_flagged(tmp_path):
    rows = _corpus(30)
    rows.append({"text": rows[5]["text"].upper(), "label": "neutral" if rows[5]["label"] != "neutral" else "positive"})
    prepared = _prepare(tmp_path, rows)
    conflicts = prepared.report["conflicting_labels"]["train"]
    assert conflicts["count"] == 1 and "train.jsonl:6" in conflicts["examples"][0]
    exact = next(s for s in prepared.report["steps"] if s["step"] == "exact duplicates removed")
    assert exact["removed"] == 1


# --- near-duplicates -----------------------------------------------------------------------------

def test_near_duplicates_within_a_file_keep_the_first():
    rng = random.Random(1)
    base = [_review(rng, 30) for _ in range(50)]
    texts = base + [t.replace(t.split()[3], "changed", 1) for t in base[:10]]
    drops = neardup.dedup(texts, threshold=0.7)
    assert sorted(i for i, _, _ in drops) == list(range(50, 60))
    assert all(j == i - 50 for i, j, _ in drops)


def test_planted_near_duplicates_of_test_items_are_reported_and_dropped_by_data_prepare(tmp_path):
    rng = random.Random(7)
    test = [{"text": _review(rng, 40), "label": LABELS[i % 3]} for i in range(60)]
    train = _corpus(300, seed=3)
    planted = []
    for i, item in enumerate(test[:20]):
        words = item["text"].split()
        words[i % 40] = "planted"  # one word in forty changed: a near-duplicate, not an exact one
        planted.append({"text": " ".join(words), "label": item["label"]})
    train_path = write_jsonl(tmp_path / "train.jsonl", train[:150] + planted + train[150:])
    test_path = write_jsonl(tmp_path / "test.jsonl", test)
    recipe = {"name": "planted", "model": "m", "task": {"labels": LABELS},
              "data": {"train": str(train_path), "test": str(test_path), "split": {"validation": 0.0, "test": 0.0},
                       "clean": {"near_threshold": 0.8}}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "prepared"
    proc = subprocess.run([sys.executable, "-m", "lmtune.cli", "data", "prepare", str(path), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "data_report.json").read_text())
    assert report["leakage"]["near"] == 20 and report["leakage"]["dropped_from_train"] == 20
    kept = {json.loads(line)["text"] for line in (out / "train.jsonl").open()}
    assert not kept & {p["text"] for p in planted}
    assert "leakage" in proc.stdout


# --- PII -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, kind", [
    ("write to jane.doe+x@mail.example.org today", "EMAIL"),
    ("see https://example.com/a?b=1 for more", "URL"),
    ("card 4111 1111 1111 1111 was charged", "CREDIT_CARD"),
    ("my ssn is 123-45-6789", "SSN"),
    ("server at 10.0.0.12 is down", "IP"),
    ("iban GB82 WEST 1234 5698 7654 32 please", "IBAN"),
    ("call me at (555) 123-4567", "PHONE"),
    ("call +44 20 7946 0958", "PHONE"),
])
def test_pii_kinds_are_detected_and_masked(text, kind):
    masked, counts = pii.scan(text)
    assert counts == {kind: 1} and f"<{kind}>" in masked


@pytest.mark.parametrize("text", ["card 4111 1111 1111 1112 failed the checksum", "dose 1234 5678 9012 3456 units",
                                  "version 999.1.1.1", "on 2021-05-06 at 10:30", "ssn 000-12-3456", "took 20 mg twice"])
def test_pii_leaves_lookalikes_alone(text):
    assert pii.scan(text) == (text, {})


@pytest.mark.parametrize("policy", ["mask", "drop", "report"])
def test_pii_policies(tmp_path, policy):
    rows = _corpus(30)
    rows[0]["text"] += " mail me: a.b@c.com"
    prepared = _prepare(tmp_path, rows, clean={"pii": policy})
    assert prepared.report["pii"]["train"]["EMAIL"] == 1
    texts = [ex.record["text"] for exs in prepared.splits.values() for ex in exs]
    assert any("<EMAIL>" in t for t in texts) == (policy == "mask")
    assert any("a.b@c.com" in t for t in texts) == (policy == "report")
    assert sum(len(v) for v in prepared.splits.values()) == (29 if policy == "drop" else 30)


# --- split, leakage, contamination ---------------------------------------------------------------

def test_grouped_split_never_straddles_a_group(tmp_path):
    rows = [{**r, "patient": f"p{i // 3}"} for i, r in enumerate(_corpus(90))]
    prepared = _prepare(tmp_path, rows, split={"validation": 0.1, "test": 0.2, "group_by": "patient"})
    groups = {name: {ex.extra["patient"] for ex in exs} for name, exs in prepared.splits.items()}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["validation"]
    assert not groups["validation"] & groups["test"]


def test_split_leaving_a_class_without_test_examples_is_an_error(tmp_path):
    rows = _corpus(30)
    rows[0]["label"] = "neutral"
    for r in rows[1:]:
        r["label"] = "positive" if r["label"] == "neutral" else r["label"]
    with pytest.raises(UserError, match="too few") as info:
        _prepare(tmp_path, rows)
    assert info.value.source.startswith("data.split")


def test_leakage_policies(tmp_path):
    train, test = _corpus(40), _corpus(6, seed=9)
    train[3] = dict(test[0])
    with pytest.raises(UserError, match="repeat validation/test inputs") as info:
        _prepare(tmp_path, train, test, leakage="fail")
    assert info.value.source.endswith("train.jsonl:4")
    reported = _prepare(tmp_path, train, test, leakage="report")
    assert reported.report["leakage"]["exact"] == 1
    assert len(reported.splits["train"]) + len(reported.splits["validation"]) == 40


def test_contamination_against_evaluation_files(tmp_path):
    train = _corpus(40)
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"question": train[7]["text"], "choices": ["a", "b"], "answer": 0},
                                                   {"question": "unrelated question", "choices": ["a"], "answer": 0}])
    prepared = _prepare(tmp_path, train, contamination=[str(bench)])
    assert prepared.report["contamination"]["exact"] == 1
    assert prepared.report["contamination"]["dropped_from_train"] == 1


# --- augmentation --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["random_deletion", "random_swap", "synonym_replacement"])
def test_augmentation_touches_train_only_and_tags_copies(tmp_path, method):
    plain = _prepare(tmp_path, _corpus(60))
    aug = _prepare(tmp_path, _corpus(60), augment={"method": method, "p": 0.2, "copies": 2})
    assert len(aug.splits["train"]) == 3 * len(plain.splits["train"])
    for name in ("validation", "test"):
        assert [e.record for e in aug.splits[name]] == [e.record for e in plain.splits[name]]
    copies = [e for e in aug.splits["train"] if "augmented_from" in e.extra]
    assert len(copies) == 2 * len(plain.splits["train"])
    assert all(c.extra["augmentation"] == method for c in copies)
    originals = {e.source: e for e in aug.splits["train"] if "augmented_from" not in e.extra}
    assert all(c.record["label"] == originals[c.extra["augmented_from"]].record["label"] for c in copies)
    assert sum(c.record["text"] != originals[c.extra["augmented_from"]].record["text"]
               for c in copies) > len(copies) // 2


def test_unknown_augmentation_names_the_key(tmp_path):
    with pytest.raises(UserError) as info:
        _prepare(tmp_path, _corpus(30), augment={"method": "telepathy"})
    assert info.value.source == "data.augment.method"


@pytest.mark.parametrize("method", ["paraphrase", "back_translation"])
def test_model_based_augmentation_rewrites_train_inputs(tmp_path, tiny_model_dir, method):
    plain = _prepare(tmp_path, _corpus(30))
    aug = _prepare(tmp_path, _corpus(30), augment={"method": method, "model": str(tiny_model_dir), "max_new_tokens": 6})
    copies = [e for e in aug.splits["train"] if "augmented_from" in e.extra]
    assert len(copies) == len(plain.splits["train"]) and all(c.extra["augmentation"] == method for c in copies)
    originals = {e.source: e.record["text"] for e in plain.splits["train"]}
    assert sum(c.record["text"] != originals[c.extra["augmented_from"]] for c in copies) > len(copies) // 2
    assert [e.record for e in aug.splits["test"]] == [e.record for e in plain.splits["test"]]
