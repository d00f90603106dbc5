"""Readers for JSONL, CSV/TSV, Parquet and Arrow directories, streaming, with file:line errors."""

from __future__ import annotations

import csv
import json
import os
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


def read_rows(path: str | Path, limit: int | None = None) -> list[Row]:
    """All records of a file (or the first ``limit``)."""
    rows: list[Row] = []
    for row in iter_rows(path):
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    return rows


@reader(".jsonl", ".json", ".ndjson")
def _iter_jsonl(path: Path) -> Iterator[Row]:
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(f"not UTF-8 (byte {exc.start + 1}); re-encode the file as UTF-8",
                                source=where) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"not valid JSON ({exc.msg} at column {exc.colno}); each line must be "
                                "one JSON object", source=where) from None
            if not isinstance(record, dict):
                raise UserError(f"line is a JSON {type(record).__name__}, not an object like "
                                '{"text": ..., "label": ...}', source=where)
            yield where, record


@reader(".csv", ".tsv")
def _iter_csv(path: Path) -> Iterator[Row]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = csv.reader(fh, delimiter=delimiter)
            header = next(rows, None)
            if not header:
                raise UserError("file has no header row", source=f"{path}:1")
            header = [h.strip() or f"column_{i}" for i, h in enumerate(header)]
            start = rows.line_num + 1
            for values in rows:
                where = f"{path}:{start}"
                start = rows.line_num + 1
                if not values:
                    continue
                if len(values) != len(header):
                    raise UserError(f"row has {len(values)} fields but the header has {len(header)}; "
                                    "quote fields that contain the delimiter", source=where)
                yield where, dict(zip(header, values))
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 (byte offset {exc.start}); re-encode the file as UTF-8",
                        source=str(path)) from None
    except csv.Error as exc:
        raise UserError(f"malformed CSV: {exc}", source=str(path)) from None


@reader(".parquet", ".pq")
def _iter_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise UserError(f"not a readable Parquet file ({exc})", source=str(path)) from None
    yield from _iter_batches(path, table.iter_batches(batch_size=4096))


def _iter_batches(path: Path, batches) -> Iterator[Row]:
    number = 0
    for batch in batches:
        for record in batch.to_pylist():
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
