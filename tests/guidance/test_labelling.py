"""The labelling store over a real SQLite file: assignment with overlap (and under concurrent askers), answers,
skips, flags, re-answers and undo with their history, agreement against hand-computed kappas, and the export that
``lmtune data check`` accepts."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from conftest import run_cli, sentiment_records, write_jsonl

from lmtune import atomic
from lmtune.errors import UserError
from lmtune.guidance import agreement, db, label_export, label_pool, labelling

LABELS = ["negative", "neutral", "positive"]
FIELDS = {"text": "review", "label": "rating"}


@pytest.fixture
def conn(tmp_path):
    with db.opened(tmp_path / "guidance.sqlite", labelling.SCHEMA) as connection:
        yield connection


@pytest.fixture
def pool(tmp_path):
    return write_jsonl(tmp_path / "pool.jsonl", sentiment_records(12))


def make(conn, pool, name="q", overlap=0.0, **given):
    settings = label_pool.Settings(name, "classification", LABELS, FIELDS, "Be kind.", overlap)
    for key, value in given.items():
        setattr(settings, key, value)
    return labelling.create(conn, pool, settings)


def test_overlap_zero_never_hands_one_record_to_two_annotators_even_from_five_threads(conn, pool, tmp_path):
    make(conn, pool)
    path = tmp_path / "guidance.sqlite"
    got: dict[str, list[int]] = {}
    start = threading.Barrier(5)

    def annotate(name):
        with db.opened(path, labelling.SCHEMA) as mine:
            start.wait()
            got[name] = []
            while (shown := labelling.next_record(mine, "q", name)["record"]) is not None:
                got[name].append(shown["index"])
                labelling.answer(mine, "q", name, shown["index"], "label", "positive")

    threads = [threading.Thread(target=annotate, args=(f"a{i}",)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handed = [index for indices in got.values() for index in indices]
    assert sorted(handed) == list(range(12))  # each record to exactly one annotator
    assert labelling.progress(conn, "q") == {"mine": 0, "total": 12, "answered": 12, "needed": 12}


def test_overlap_one_hands_every_record_to_two_annotators_and_no_third(conn, pool):
    make(conn, pool, overlap=1.0)
    seen = {}
    for name in ("ann", "bob"):
        seen[name] = []
        while (shown := labelling.next_record(conn, "q", name)["record"]) is not None:
            seen[name].append(shown["index"])
            labelling.answer(conn, "q", name, shown["index"], "label", "neutral")
    assert seen["ann"] == seen["bob"] == list(range(12))
    assert labelling.next_record(conn, "q", "cy")["record"] is None
    assert labelling.progress(conn, "q", "ann") == {"mine": 12, "total": 12, "answered": 24, "needed": 24}


def test_a_lease_keeps_the_record_until_answered_and_others_get_the_next(conn, pool):
    make(conn, pool)
    first = labelling.next_record(conn, "q", "ann")["record"]["index"]
    assert labelling.next_record(conn, "q", "ann")["record"]["index"] == first  # asking again: the same one
    assert labelling.next_record(conn, "q", "bob")["record"]["index"] != first
    with pytest.raises(labelling.NotHanded, match="was not handed to bob"):
        labelling.answer(conn, "q", "bob", first, "label", "positive")
    # An expired lease frees the record for someone else.
    assert labelling.next_record(conn, "q", "cy", now=9e12)["record"]["index"] == first


def test_skip_flag_reanswer_and_undo_keep_the_history(conn, pool):
    make(conn, pool)
    index = labelling.next_record(conn, "q", "ann")["record"]["index"]
    labelling.answer(conn, "q", "ann", index, "skip")
    skipped = index
    index = labelling.next_record(conn, "q", "ann")["record"]["index"]
    assert index != skipped  # a skipped record is not handed to the same annotator again
    labelling.answer(conn, "q", "ann", index, "flag", "negative", note="sarcasm?")
    replaced = labelling.answer(conn, "q", "ann", index, "label", "positive")  # re-answer: no new lease needed
    assert replaced["replaced"] is True
    states = [tuple(r) for r in conn.execute("SELECT kind, label, state FROM label_answers WHERE idx = ? ORDER BY id",
                                             (index,))]
    assert states == [("flag", "negative", "replaced"), ("label", "positive", "live")]
    # Another annotator gets the skipped record (a skip covers nothing).
    assert labelling.next_record(conn, "q", "bob")["record"]["index"] == skipped
    undone = labelling.undo(conn, "q", "ann")
    assert undone["undone"] == {"index": index, "kind": "label", "label": "positive"}
    assert undone["record"]["index"] == index
    assert labelling.next_record(conn, "q", "ann")["record"]["index"] == index  # handed back
    assert [a["kind"] for a in labelling.answers(conn, "q", "ann")] == ["skip"]
    assert conn.execute("SELECT COUNT(*) FROM label_answers").fetchone()[0] == 3  # nothing deleted
    labelling.undo(conn, "q", "ann")
    with pytest.raises(labelling.NotHanded, match="no answer"):
        labelling.undo(conn, "q", "ann")


def test_bad_answers_are_refused(conn, pool):
    make(conn, pool)
    index = labelling.next_record(conn, "q", "ann")["record"]["index"]
    with pytest.raises(UserError, match="not one of this queue's labels"):
        labelling.answer(conn, "q", "ann", index, "label", "meh")
    with pytest.raises(UserError, match="kind is one of"):
        labelling.answer(conn, "q", "ann", index, "maybe", "positive")
    with pytest.raises(labelling.QueueNotFound):
        labelling.answer(conn, "nope", "ann", index, "label", "positive")


def test_an_active_queue_file_is_shown_in_rank_order_with_its_prelabels(conn, tmp_path):
    lines = [{"review": f"text {i}", "prelabel": "positive", "confidence": 0.5 + i / 100, "score": 1.0,
              "strategy": "entropy", "rank": 2 - i, "pool_line": 10 + i} for i in range(3)]
    make(conn, write_jsonl(tmp_path / "queue.jsonl", lines))
    shown = labelling.next_record(conn, "q", "ann")["record"]
    assert (shown["index"], shown["text"], shown["prelabel"], shown["confidence"]) == (2, "text 2", "positive", 0.52)
    assert labelling.find(conn, "q").ordering == "rank"
    labelling.answer(conn, "q", "ann", 2, "label", "negative")
    exported = label_export.export(conn, "q")
    assert set(exported[0]) == {"review", "rating", "annotator", "labelled_at"}  # bookkeeping keys dropped


def _answer_all(conn, name, labels):
    for label in labels:
        index = labelling.next_record(conn, "q", name)["record"]["index"]
        labelling.answer(conn, "q", name, index, "label", label)


def test_cohen_kappa_matches_the_hand_computed_value(conn, pool):
    # 12 records: both positive on 5, both negative on 4, a positive/b negative on 1, a negative/b positive on 2.
    # p_o = 9/12 = 0.75; p(a positive) = 6/12, p(b positive) = 7/12; p_e = 6/12*7/12 + 6/12*5/12 = 0.5;
    # kappa = (0.75 - 0.5) / (1 - 0.5) = 0.5.
    make(conn, pool, overlap=1.0)
    _answer_all(conn, "a", ["positive"] * 5 + ["negative"] * 4 + ["positive"] + ["negative"] * 2)
    _answer_all(conn, "b", ["positive"] * 5 + ["negative"] * 4 + ["negative"] + ["positive"] * 2)
    found = agreement.of_queue(conn, "q")
    (pair,) = found["pairs"]
    assert (pair["a"], pair["b"], pair["records"], pair["raw_agreement"]) == ("a", "b", 12, 0.75)
    assert pair["kappa"] == pytest.approx(0.5)
    assert pair["ci_low"] < 0.5 < pair["ci_high"] and -1 <= pair["ci_low"] and pair["ci_high"] <= 1
    assert found["fleiss"] is None  # two annotators
    assert agreement.of_queue(conn, "q") == found  # a fixed seed: the same interval every time
    few = agreement.cohen(["negative", "positive"], [("positive", "positive"), ("negative", "positive")])
    assert few["raw_agreement"] == 0.5 and few["ci_low"] is None and "no interval below 10" in few["note"]


def test_fleiss_kappa_matches_the_textbook_example_and_its_vectorised_cohen():
    # Fleiss (1971) as on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters, 5 categories, kappa 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert float(agreement.fleiss_kappa(np.array(table))) == pytest.approx(0.20993, abs=1e-4)
    a, b = np.array([0, 0, 1, 1, 2, 2, 0, 1]), np.array([0, 1, 1, 1, 2, 0, 0, 2])
    from sklearn.metrics import cohen_kappa_score
    assert float(agreement.cohen_rows(a, b, 3)) == pytest.approx(cohen_kappa_score(a, b))


def test_three_annotators_get_fleiss_kappa_over_the_records_two_of_them_labelled(conn, pool):
    make(conn, pool, overlap=1.0)
    _answer_all(conn, "a", ["positive", "negative", "neutral", "positive"])  # records 0-3
    _answer_all(conn, "c", ["positive", "negative", "positive"])  # records 0-2 (a's, each needing a second)
    _answer_all(conn, "b", ["positive", "neutral", "negative"])  # records 3, 4, 5
    _answer_all(conn, "c", ["neutral"])  # record 4, b's
    found = agreement.of_queue(conn, "q")
    assert [(p["a"], p["b"], p["records"]) for p in found["pairs"]] == [("a", "b", 1), ("a", "c", 3), ("b", "c", 1)]
    # records 0-4 by label (negative, neutral, positive): 0 both positive, 1 both negative, 2 neutral/positive,
    # 3 both positive, 4 both neutral
    counts = [[0, 0, 2], [2, 0, 0], [0, 1, 1], [0, 0, 2], [0, 2, 0]]
    assert found["fleiss"]["records"] == 5
    assert found["fleiss"]["kappa"] == pytest.approx(float(agreement.fleiss_kappa(np.array(counts))))
    # by hand: P_i = 1, 1, 0, 1, 1 -> P = 0.8; p = (2, 3, 5) / 10 -> P_e = 0.38; kappa = 0.42 / 0.62
    assert found["fleiss"]["kappa"] == pytest.approx(0.42 / 0.62)


def test_agreement_with_too_few_common_records_says_so(conn, pool):
    make(conn, pool, overlap=1.0)
    _answer_all(conn, "a", ["positive"])
    _answer_all(conn, "b", ["negative"])
    _answer_all(conn, "c", ["negative"])  # a third annotator on record 0? no: two are needed, so c gets record 1
    found = agreement.of_queue(conn, "q")
    assert [(p["a"], p["b"], p["records"], p["kappa"], p["note"]) for p in found["pairs"]] == [
        ("a", "b", 1, None, agreement.FEW)]


def test_export_takes_the_majority_marks_disagreement_and_flags_and_data_check_accepts_it(conn, pool, tmp_path):
    make(conn, pool, overlap=1.0)
    _answer_all(conn, "a", ["positive", "negative", "neutral"])
    _answer_all(conn, "b", ["positive", "positive"])
    index = labelling.next_record(conn, "q", "b")["record"]["index"]
    labelling.answer(conn, "q", "b", index, "flag", note="unclear")  # a flag without a label
    index = labelling.next_record(conn, "q", "b")["record"]["index"]
    labelling.answer(conn, "q", "b", index, "skip")  # record 3: skipped only
    records = label_export.export(conn, "q")
    assert [(r["review"].split("#")[1], r["rating"], r.get("annotators"), r.get("agreement"), r.get("flagged"))
            for r in records] == [("0", "positive", ["a", "b"], True, None),
                                  ("1", "negative", ["a", "b"], False, None),  # a tie: the earlier answer wins
                                  ("2", "neutral", None, None, True)]
    assert records[2]["annotator"] == "a" and records[2]["labelled_at"].endswith("+00:00")
    out = tmp_path / "labels.jsonl"
    out.write_text(atomic.jsonl(records))
    code, output = run_cli("data", "check", str(out), "--task", "classification", "--labels", ",".join(LABELS),
                           "--field", "text=review", "--field", "label=rating")
    assert code == 0, output
    assert label_export.majority(["x", "y", "y"]) == "y" and label_export.majority(["y", "x"]) == "y"


def test_a_generation_queue_takes_free_text_and_exports_it_as_the_target(conn, tmp_path):
    pool = write_jsonl(tmp_path / "gen.jsonl", [{"prompt": "Say hi", "prelabel": "hello", "rank": 0,
                                                 "pool_line": 1, "confidence": None, "score": 1, "strategy": "x"}])
    labelling.create(conn, pool, label_pool.settings("g", labels=None, task="generation"))
    shown = labelling.next_record(conn, "g", "ann")["record"]
    assert (shown["text"], shown["prelabel"]) == ("Say hi", "hello")
    with pytest.raises(UserError, match="text of 1 to"):
        labelling.answer(conn, "g", "ann", 0, "label", "  ")
    labelling.answer(conn, "g", "ann", 0, "label", "hello there")
    assert label_export.export(conn, "g")[0]["completion"] == "hello there"
    assert agreement.of_queue(conn, "g")["applies"] is False


@pytest.mark.parametrize(("given", "message"), [
    ({"name": "bad name!"}, "a queue name is"),
    ({"labels": None}, "labels are missing"),
    ({"labels": None, "task": "summarize"}, "a labelling queue needs a classification or generation task"),
    ({"labels": ["only"]}, "at least two distinct labels"),
    ({"labels": "a, a"}, "at least two distinct labels"),
    ({"task": "regression"}, "classification or generation task"),
    ({"overlap": 1.5}, "overlap is the share"),
    ({"overlap": "half"}, "overlap is the share"),
])
def test_bad_settings_are_refused(given, message):
    arguments = {"name": "q", "labels": LABELS, **given}
    with pytest.raises(UserError, match=message):
        label_pool.settings(**arguments)


def test_bad_pools_and_duplicate_names_are_refused_with_file_line(conn, tmp_path, pool):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"review": "fine"}\nnot json\n')
    with pytest.raises(UserError) as caught:
        make(conn, broken)
    assert str(caught.value).startswith(f"{broken}:2: not valid JSON")
    with pytest.raises(UserError, match="no such data file"):
        make(conn, tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="empty"):
        make(conn, tmp_path / "empty.jsonl")
    with pytest.raises(UserError, match="no text to show") as caught:
        make(conn, write_jsonl(tmp_path / "wrong.jsonl", [{"review": "x"}, {"body": "y"}]))
    assert caught.value.source == f"{tmp_path / 'wrong.jsonl'}:2"
    make(conn, pool)
    with pytest.raises(UserError, match="already a queue called 'q'"):
        make(conn, pool)
    assert labelling.names(conn) == ["q"]


def test_a_recipe_supplies_labels_task_and_fields(tmp_path, tiny_model_dir, pool, conn):
    from conftest import write_recipe

    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, pool)
    settings = label_pool.settings("r", recipe=recipe)
    assert (settings.task, settings.labels, settings.fields) == ("classification", LABELS, FIELDS)
    labelling.create(conn, pool, settings)
    assert labelling.next_record(conn, "r", "ann")["record"]["text"] == sentiment_records(1)[0]["review"]
    json.dumps(labelling.summary(conn, "r", "ann", everyone=True))  # a JSON-able row
