"""Arrow record batches (Parquet, ``save_to_disk`` directories) as plain JSON-ready records.

Types JSON has no form for are converted column-wise by pyarrow before rows are built: timestamps
become ISO 8601 strings (nanoseconds included, which Python's datetime cannot hold), dates and
times their ISO strings, durations seconds, decimals floats. Binary values stay ``bytes``, so a
binary column used as a text field is refused by name (``formats``) instead of training on a repr.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lmtune.errors import UserError

_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}


def guarded(batches: Iterable, path: Path) -> Iterator:
    """``batches``, with a read error (a damaged page, an unsupported encoding) as a UserError."""
    import pyarrow as pa

    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"cannot read the file's data ({exc}); write it again or export it as JSONL",
                            source=str(path)) from None
        yield batch


def to_records(batch, path: Path) -> list[dict[str, Any]]:
    """The rows of one record batch as dicts, temporal and decimal columns made JSON-ready."""
    import pyarrow as pa

    columns = {name: _plain(col) for name, col in zip(batch.schema.names, batch.columns)}
    try:
        return pa.RecordBatch.from_pydict(columns).to_pylist()
    except (pa.ArrowException, ValueError, OverflowError) as exc:
        name = _failing_column(columns)
        raise UserError(f"column {name!r} (type {batch.schema.field(name).type}) cannot be read as values "
                        f"({exc}); convert it to text or numbers", source=str(path)) from None


def _plain(col):
    """One column converted so its Python values are JSON types (or bytes)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = col.type
    if pa.types.is_timestamp(kind):
        return pc.strftime(col, format="%Y-%m-%dT%H:%M:%S" + ("%z" if kind.tz else ""))
    if pa.types.is_date(kind) or pa.types.is_time(kind):
        return col.cast(pa.string())
    if pa.types.is_duration(kind):
        return pc.divide(col.cast(pa.int64()).cast(pa.float64()), _PER_SECOND[kind.unit])
    if pa.types.is_decimal(kind):
        return col.cast(pa.float64())
    return col


def _failing_column(columns: dict) -> str:
    """The first column whose values cannot be turned into Python objects (nested temporal types)."""
    for name, col in columns.items():
        try:
            col.to_pylist()
        except Exception:  # the same errors as the batch conversion; we only want the name
            return name
    return next(iter(columns))
