"""Hostile data files through the real CLI: each gets exit 2, one ``error:`` line naming where, no traceback,
nothing left behind; and valid files that used to be refused or misread are accepted as they are."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from hostile import assert_user_error, cli, snapshot

GOOD = b'{"text": "fine review", "label": "positive"}\n'
LABELS = "negative,neutral,positive"


def _parquet(columns: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def _struct_text():
    return _parquet({"text": [{"title": "a", "body": "b"}], "label": ["positive"]})


def _list_text():
    return _parquet({"tags": [["good", "great"]], "label": ["positive"]})


def _map_text():
    import pyarrow as pa

    return _parquet({"text": pa.array([[("k", "v")]], pa.map_(pa.string(), pa.string())), "label": ["positive"]})


def _binary_text():
    return _parquet({"text": [b"\x00\x01binary"], "label": ["positive"]})


def _empty_parquet():
    import pyarrow as pa

    return _parquet({"text": pa.array([], pa.string()), "label": pa.array([], pa.string())})


def _deep() -> bytes:
    return GOOD + b'{"text": "x", "label": "positive", "meta": ' + b"[" * 200_000 + b"]" * 200_000 + b"}\n"


# name: (file name, content (bytes or a function making them), extra CLI args, words in the error, where)
# "where" is the line number (":N" is appended to the path), or "" for the file as a whole.
CHECK_CASES = {
    "csv-stray-quote-swallows-rows": ("d.csv", b'text,label\n"hello,positive\nbye,negative\nfine",neutral\n'
                                      b"ok,positive\n", [], "stray", 2),
    "csv-quote-never-closed": ("d.csv", b'text,label\nok,positive\n"never closed,negative\nbye,neutral\n', [],
                               "quote", 3),
    "csv-quote-inside-quoted-field": ("d.csv", b'text,label\n"hello,positive\nbye,negative\nsay "hi",neutral\n',
                                      [], "quote", 2),
    "parquet-struct-as-text": ("d.parquet", _struct_text, [], "struct", "row 1"),
    "parquet-list-as-text": ("d.parquet", _list_text, ["--field", "text=tags"], "'tags'", "row 1"),
    "parquet-map-as-text": ("d.parquet", _map_text, [], "'text'", "row 1"),
    "parquet-binary-as-text": ("d.parquet", _binary_text, [], "binary", "row 1"),
    "parquet-no-rows": ("d.parquet", _empty_parquet, [], "no records", ""),
    "parquet-corrupt": ("d.parquet", b"PAR1 this is not parquet PAR1", [], "Parquet", ""),
    "chat-content-null": ("d.jsonl", b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", '
                          b'"content": "yo"}]}\n{"messages": [{"role": "user", "content": null}, {"role": '
                          b'"assistant", "content": "yo"}]}\n', [], "content", 2),
    "chat-content-object": ("d.jsonl", b'{"messages": [{"role": "user", "content": {"a": 1}}, {"role": '
                            b'"assistant", "content": "yo"}]}\n', [], "messages[0].content", 1),
    "preference-chosen-equals-rejected": ("d.jsonl", b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n'
                                          b'{"prompt": "q", "chosen": "same  answer", "rejected": "same answer "}\n',
                                          [], "chosen and rejected", 2),
    "text-is-an-object": ("d.jsonl", GOOD + b'{"text": {"body": "x"}, "label": "positive"}\n', [], "'text'", 2),
    "label-is-a-list": ("d.jsonl", GOOD + b'{"text": "x", "label": ["positive"]}\n', [], "'label'", 2),
    "instruction-input-is-a-list": ("d.jsonl", b'{"instruction": "i", "input": ["a", "b"], "output": "o"}\n', [],
                                    "'input'", 1),
    "regression-label-nan": ("d.jsonl", b'{"text": "a", "label": 1.5}\n{"text": "b", "label": NaN}\n',
                             ["--task", "regression"], "finite", 2),
    "regression-label-inf-string": ("d.jsonl", b'{"text": "a", "label": "inf"}\n', ["--task", "regression"],
                                    "finite", 1),
    "json-nested-200000-deep": ("d.jsonl", _deep, [], "nested too deeply", 2),
    "empty-file": ("d.jsonl", b"", [], "empty", ""),
    "jsonl-only-blank-lines": ("d.jsonl", b"\n\n   \n\t\n", [], "blank", ""),
    "csv-only-blank-lines": ("d.csv", b"\r\n\r\n\r\n", [], "blank", ""),
    "csv-header-only": ("d.csv", b"text,label\n", [], "no records", ""),
}


@pytest.mark.parametrize("name", sorted(CHECK_CASES))
def test_data_check_refuses_hostile_file(tmp_path, name):
    filename, content, args, words, where = CHECK_CASES[name]
    path = tmp_path / filename
    path.write_bytes(content() if callable(content) else content)
    before = snapshot(tmp_path)
    proc = cli("data", "check", path, *args, cwd=tmp_path)
    line = assert_user_error(proc, words, before=before, root=tmp_path)
    prefix = f"error: {path}:{where}: " if where != "" else f"error: {path}: "
    assert line.startswith(prefix), line


ACCEPTED = {
    "csv-with-bom": ("d.csv", b"\xef\xbb\xbftext,label\nhello there,positive\nbye now,negative\n", 2),
    "tsv-with-bom": ("d.tsv", b"\xef\xbb\xbftext\tlabel\nhello there\tpositive\n", 1),
    "jsonl-with-bom": ("d.jsonl", b"\xef\xbb\xbf" + GOOD + b'{"text": "another", "label": "negative"}\n', 2),
    "tsv-fields-starting-with-quotes": ("d.tsv", b'text\tlabel\n"a" she said\tpositive\n"b\tnegative\n'
                                        b'c"\tneutral\n"d"\tpositive\n', 4),
    "csv-quoted-field-over-two-lines": ("d.csv", b'text,label\n"line one\nline two, more",positive\nok,negative\n'
                                        b'"he said ""hi""",neutral\n', 3),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_data_check_accepts_valid_file(tmp_path, name):
    filename, content, records = ACCEPTED[name]
    path = tmp_path / filename
    path.write_bytes(content)
    proc = cli("data", "check", path, "--labels", LABELS, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{records} records, format classification" in proc.stdout, proc.stdout
    assert "\ufeff" not in proc.stdout


def test_tsv_quotes_are_kept_as_text(tmp_path):
    from lmtune.data import io as data_io

    path = tmp_path / "d.tsv"
    path.write_bytes(ACCEPTED["tsv-fields-starting-with-quotes"][1])
    rows = data_io.read_rows(path)
    assert [r["text"] for _, r in rows] == ['"a" she said', '"b', 'c"', '"d"']
    assert [s for s, _ in rows] == [f"{path}:{n}" for n in (2, 3, 4, 5)]


# --- data prepare with a recipe ------------------------------------------------------------------

def _records(n, **extra):
    """Distinct reviews (random word orders, so no two are near-copies of each other)."""
    import random

    rng = random.Random(0)
    words = "pain sleep mood drug dose week better worse helped stopped doctor side effects tired great".split()
    return [{"text": " ".join(rng.sample(words, 10)), "label": "positive", **extra} for _ in range(n)]


def _prepare(tmp_path, rows, data=None, task=None):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "x", "model": "m",
                                      "task": task or {"labels": ["negative", "neutral", "positive"]},
                                      "data": {"train": str(train), **(data or {})}}))
    before = snapshot(tmp_path)
    return cli("data", "prepare", recipe, "--out", tmp_path / "out", cwd=tmp_path), before, train


def test_split_leaving_one_training_example(tmp_path):
    rows = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(3)]
    proc, before, _ = _prepare(tmp_path, rows, {"split": {"validation": 0.3, "test": 0.3, "stratify": False}},
                               task={"type": "generation"})
    line = assert_user_error(proc, "data.split", before=before, root=tmp_path)
    assert "training" in line


def test_record_over_max_record_chars_is_refused_before_dedup(tmp_path):
    rows = _records(20)
    rows[7]["text"] = "word " * 220_000  # 1.1 million characters
    proc, before, train = _prepare(tmp_path, rows)
    line = assert_user_error(proc, "data.max_record_chars", before=before, root=tmp_path)
    assert line.startswith(f"error: {train}:8: ")


def test_contamination_question_that_is_not_text(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"question": null, "choices": ["a"], "answer": 0}\n')
    proc, before, _ = _prepare(tmp_path, _records(30), {"contamination": [str(bench)]})
    line = assert_user_error(proc, "question", before=before, root=tmp_path)
    assert line.startswith(f"error: {bench}:1: ")


def test_parquet_timestamps_become_iso_strings_and_binary_extras_are_left_out(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 30
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({
        "text": [r["text"] for r in _records(n)], "label": ["positive", "negative", "neutral"] * (n // 3),
        "when": pa.array([1_700_000_000_123_456_789 + i for i in range(n)], pa.timestamp("ns")),
        "blob": [b"\x00\xff"] * n}), path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "x", "model": "m", "task": {"labels": LABELS.split(",")},
                                      "data": {"train": str(path)}}))
    proc = cli("data", "prepare", recipe, "--out", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    first = json.loads((tmp_path / "out" / "train.jsonl").read_text().splitlines()[0])
    assert first["when"].startswith("2023-11-14T22:13:20.1234567") and "blob" not in first


@pytest.mark.parametrize("prompt", ["Review: {text", "Review: {}", "{text:>{width}}", "{nonexistent}"])
def test_broken_template_placeholder_through_train(tmp_path, recipe_file, prompt):
    path = recipe_file(task={"template": {"prompt": prompt, "completion": "{label}"}})
    before = snapshot(tmp_path)
    proc = cli("train", path, "--out", tmp_path / "run", cwd=tmp_path)
    line = assert_user_error(proc, "task.template", before=before, root=tmp_path)
    assert prompt.split(":")[-1].strip("} ") in line


def test_csv_with_bom_through_data_prepare_maps_its_first_column(tmp_path):
    rows = _records(30)
    body = "review,rating\n" + "".join(f"{r['text']},{['negative', 'neutral', 'positive'][i % 3]}\n"
                                      for i, r in enumerate(rows))
    (tmp_path / "d.csv").write_bytes(b"\xef\xbb\xbf" + body.encode())
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "x", "model": "m", "task": {"labels": LABELS.split(",")},
                                      "data": {"train": "d.csv", "fields": {"text": "review", "label": "rating"}}}))
    proc = cli("data", "prepare", recipe, "--out", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    first = json.loads((tmp_path / "out" / "train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"text", "label"} and "\ufeff" not in first["text"]


@pytest.mark.parametrize("line, words", [("null", "not an object"), ('{"text": ' + "1" * 5000 + "}", "too large")])
def test_json_lines_python_cannot_hold_as_records(tmp_path, line, words):
    path = tmp_path / "odd.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n' + line + "\n")
    before = snapshot(tmp_path)
    error = assert_user_error(cli("data", "check", path, cwd=tmp_path), words, before=before, root=tmp_path)
    assert error.startswith(f"error: {path}:2: ")
