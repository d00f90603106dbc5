"""Readers for JSONL, CSV/TSV, Parquet and Arrow directories, streaming, with file:line errors."""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmtune.errors import UserError

Row = tuple[str, dict[str, Any]]  # (source "file:line", record)

_READERS: dict[str, Any] = {}


def reader(*suffixes: str):
    """Register a row reader for file suffixes."""
    def wrap(fn):
        for s in suffixes:
            _READERS[s] = fn
        return fn
    return wrap


def iter_rows(path: str | Path) -> Iterator[Row]:
    """Yield ``(source, record)`` for each record of a data file, one at a time.

    Raises:
        UserError: missing or empty file, unknown format, or a malformed record (with file:line).
    """
    path = Path(path)
    if not path.exists():
        raise UserError("no such data file; check the path in the recipe", source=str(path))
    if path.is_dir():
        yield from _iter_dir(path)
        return
    if path.stat().st_size == 0:
        raise UserError("file is empty; it needs at least one record", source=str(path))
    if _only_blank(path):
        raise UserError("file has only blank lines; it needs at least one record", source=str(path))
    fn = _READERS.get(path.suffix.lower())
    if fn is None:
        raise UserError(f"unknown data format {path.suffix!r}; use .jsonl, .json, .csv, .tsv or .parquet",
                        source=str(path))
    count = 0
    for row in fn(path):
        count += 1
        yield row
    if count == 0:
        raise UserError("file has no records", source=str(path))


def _only_blank(path: Path) -> bool:
    """Whether a file holds nothing but whitespace (and a byte-order mark); stops at the first other byte."""
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 16):
            if chunk.replace(b"\xef\xbb\xbf", b"").strip():
                return False
    return True


def read_rows(path: str | Path, limit: int | None = None) -> list[Row]:
    """All records of a file (or the first ``limit``)."""
    rows: list[Row] = []
    for row in iter_rows(path):
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    return rows


MAX_DEPTH = 64  # nesting a record may have; deeper ones would overflow the stack later (JSON writing)


@reader(".jsonl", ".json", ".ndjson")
def _iter_jsonl(path: Path) -> Iterator[Row]:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            where = f"{path}:{number}"
            line = _decode(raw, where, first=number == 1)
            if not line.strip():
                continue
            yield where, _parse_json(line, where)


def _decode(raw: bytes, where: str, first: bool) -> str:
    """One line as text; a UTF-8 byte-order mark (Excel's "UTF-8" files) is dropped from the first."""
    try:
        return raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 (byte {exc.start + 1}); re-encode the file as UTF-8", source=where) from None


def _parse_json(line: str, where: str) -> dict[str, Any]:
    """One JSON object, refusing what is not one and what is nested too deeply to process."""
    too_deep = UserError(f"record is nested too deeply (more than {MAX_DEPTH} levels of objects and lists); "
                         "flatten it", source=where)
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON ({exc.msg} at column {exc.colno}); each line must be "
                        "one JSON object", source=where) from None
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:  # an integer of more digits than Python converts (4300 by default)
        raise UserError(f"a value too large to read ({str(exc).split(';')[0][:200]}); each line must be one "
                        "JSON object of ordinary values", source=where) from None
    if _too_deep(record, MAX_DEPTH):
        raise too_deep
    if not isinstance(record, dict):
        raise UserError(f"line is a JSON {type(record).__name__}, not an object like "
                        '{"text": ..., "label": ...}', source=where)
    return record


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests dicts/lists more than ``limit`` levels (iteratively: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


@reader(".csv", ".tsv")
def _iter_csv(path: Path) -> Iterator[Row]:
    """CSV with RFC 4180 quoting (strict, so an unbalanced quote is an error, not swallowed rows);
    TSV without quoting: tab-separated values conventionally have none, and a field that merely
    starts with a quote must not swallow the lines after it."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    tsv = path.suffix.lower() == ".tsv"
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if tsv else {"delimiter": ",", "strict": True}
    with open(path, "rb") as fh:
        lines = _Lines(fh, str(path))
        rows = csv.reader(lines, **dialect)
        header = _next_row(rows, f"{path}:1")
        if not header:
            raise UserError("file has no header row", source=f"{path}:1")
        header = [h.strip() or f"column_{i}" for i, h in enumerate(header)]
        while True:
            lines.taken.clear()
            where = f"{path}:{rows.line_num + 1}"
            values = _next_row(rows, where)
            if values is None:
                return
            if not values:
                continue
            if len(lines.taken) > 1 and not tsv:
                _check_swallowed(lines.taken, len(header), str(path), rows.line_num)
            if len(values) != len(header):
                raise UserError(f"row has {len(values)} fields but the header has {len(header)}; "
                                "quote fields that contain the delimiter", source=where)
            yield where, dict(zip(header, values))


class _Lines:
    """The physical lines of a binary file as text, decoded one at a time (so an encoding error names
    its line), remembering those taken since ``taken`` was last cleared (the current record's)."""

    def __init__(self, fh, path: str):
        self.fh, self.path, self.number, self.taken = fh, path, 0, []

    def __iter__(self):
        for raw in self.fh:
            # A lone CR ends a line too (old Mac exports), as in text mode's universal newlines.
            for part in _CR.split(raw) if b"\r" in raw[:-2] else (raw,):
                self.number += 1
                line = _decode(part, f"{self.path}:{self.number}", first=self.number == 1)
                self.taken.append(line)
                yield line


_CR = re.compile(rb"(?<=\r)(?!\n)")


def _next_row(rows, where: str) -> list[str] | None:
    """The next CSV record, or None at the end; a quoting error names the line the record starts on."""
    try:
        return next(rows)
    except StopIteration:
        return None
    except csv.Error as exc:
        reason = str(exc)
        if "unexpected end of data" in reason:
            reason = 'a quoted field starts here and is never closed; remove the stray " or close the quote'
        elif "expected after" in reason:
            reason = ('a quote inside a quoted field must be doubled ("") and a closing quote followed by the '
                      f'delimiter ({reason}); fix the stray "')
        raise UserError(f"malformed CSV: {reason}", source=where) from None


def _check_swallowed(lines: list[str], columns: int, path: str, last: int) -> None:
    """Refuse a record spanning several lines when each line on its own is a complete row.

    A legitimate quoted field with line breaks leaves its first line short of fields (the rest of the
    row follows the closing quote); a stray opening quote instead runs over whole rows.
    """
    if columns < 2:
        return  # a one-column file gives no way to tell
    widths = [len(row) for row in csv.reader(lines, delimiter=",", quoting=csv.QUOTE_NONE)]
    if len(widths) == len(lines) and all(w == columns for w in widths):
        first = last - len(lines) + 1
        raise UserError(f'a quoted field runs over lines {first}-{last}, each of which looks like a whole row: '
                        'a stray " probably swallowed those rows; remove it, or double a quote inside a quoted '
                        'field ("")', source=f"{path}:{first}")


@reader(".parquet", ".pq")
def _iter_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise UserError(f"not a readable Parquet file ({exc})", source=str(path)) from None
    yield from _iter_batches(path, table.iter_batches(batch_size=4096))


def _iter_batches(path: Path, batches) -> Iterator[Row]:
    from lmtune.data import arrow

    number = 0
    for batch in arrow.guarded(batches, path):
        for record in arrow.to_records(batch, path):
            number += 1
            yield f"{path}:row {number}", record


def _iter_dir(path: Path) -> Iterator[Row]:
    """A directory: Hugging Face ``save_to_disk`` Arrow files, or data files read in name order."""
    import pyarrow as pa

    arrow = sorted(path.glob("*.arrow"))
    files = arrow or sorted(p for p in path.iterdir() if p.suffix.lower() in _READERS)
    if not files:
        raise UserError("directory holds no .arrow, .jsonl, .csv, .tsv or .parquet files", source=str(path))
    for file in files:
        if file.suffix == ".arrow":
            with pa.memory_map(os.fspath(file)) as source:
                try:
                    batches = pa.ipc.open_stream(source)
                except pa.ArrowInvalid:
                    batches = pa.ipc.open_file(source)
                    batches = (batches.get_batch(i) for i in range(batches.num_record_batches))
                yield from _iter_batches(file, batches)
        else:
            yield from iter_rows(file)
