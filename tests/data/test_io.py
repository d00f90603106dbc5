"""Reading data files (``lmtune.data.io``): JSONL, CSV, TSV and Parquet rows, each with its ``file:line``."""

import pytest

from lmtune.data import io
from lmtune.errors import UserError


def test_jsonl_broken_line_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    with pytest.raises(UserError) as info:
        io.read_rows(path)
    assert info.value.source == f"{path}:2"


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(UserError, match="not an object") as info:
        io.read_rows(path)
    assert info.value.source.endswith(":2")


def test_empty_file_is_refused(tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(UserError, match="empty"):
        io.read_rows(empty)


def test_non_utf8_jsonl_names_its_line(tmp_path):
    latin = tmp_path / "l.jsonl"
    latin.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(UserError, match="UTF-8") as info:
        io.read_rows(latin)
    assert info.value.source.endswith(":2")


def test_csv_reads_quoted_fields_and_names_each_row_by_its_line(tmp_path):
    good = tmp_path / "g.csv"
    good.write_text('text,label\n"hello, world",positive\nbye,negative\n')
    rows = io.read_rows(good)
    assert rows[0][1] == {"text": "hello, world", "label": "positive"} and rows[1][0] == f"{good}:3"


def test_ragged_csv_row_is_reported(tmp_path):
    ragged = tmp_path / "r.csv"
    ragged.write_text("text,label\na,positive\nb,negative,extra\n")
    with pytest.raises(UserError) as info:
        io.read_rows(ragged)
    assert info.value.source == f"{ragged}:3"


def test_parquet_is_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a", "b"], "label": ["x", "y"]}), tmp_path / "d.parquet")
    assert [r for _, r in io.read_rows(tmp_path / "d.parquet")][1] == {"text": "b", "label": "y"}


def test_tsv_is_read(tmp_path):
    (tmp_path / "d.tsv").write_text("text\tlabel\nhi there\tpositive\n")
    assert io.read_rows(tmp_path / "d.tsv")[0][1]["text"] == "hi there"


def test_unknown_suffix_is_refused(tmp_path):
    (tmp_path / "d.xml").write_text("<a/>")
    with pytest.raises(UserError, match="unknown data format"):
        io.read_rows(tmp_path / "d.xml")


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(UserError, match="no such data file"):
        io.read_rows(tmp_path / "missing.jsonl")


def test_bom_is_not_part_of_the_first_column_or_record(tmp_path):
    for name, body in (("b.csv", "text,label\nhi,positive\n"), ("b.tsv", "text\tlabel\nhi\tpositive\n"),
                       ("b.jsonl", '{"text": "hi", "label": "positive"}\n')):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + body.encode())
        assert io.read_rows(tmp_path / name) == [(f"{tmp_path / name}:{1 if name.endswith('l') else 2}",
                                                  {"text": "hi", "label": "positive"})]


def test_csv_stray_quote_that_swallows_rows_is_an_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\nok,positive\n"hello,positive\nbye,negative\nfine",neutral\nlast,positive\n')
    with pytest.raises(UserError, match="stray") as info:
        io.read_rows(path)
    assert info.value.source == f"{path}:3"


def test_tsv_is_read_without_quote_processing(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text('text\tlabel\n"a\tpositive\n"b\tnegative\nc"\tneutral\n"d"\tpositive\n')
    assert [r["text"] for _, r in io.read_rows(path)] == ['"a', '"b', 'c"', '"d"']


def test_deeply_nested_json_is_refused(tmp_path):
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"text": "a", "label": "x", "m": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(UserError, match="nested too deeply") as info:
        io.read_rows(deep)
    assert info.value.source == f"{deep}:1"


def test_file_of_blank_lines_is_refused(tmp_path):
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n  \n\n")
    with pytest.raises(UserError, match="blank"):
        io.read_rows(blank)


def test_utf8_error_in_csv_names_its_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\n" + b"fine,positive\n" * 3000 + b"caf\xe9,positive\n")
    with pytest.raises(UserError, match="UTF-8") as info:
        io.read_rows(path)
    assert info.value.source == f"{path}:3002"
