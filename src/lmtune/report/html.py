"""Small HTML building blocks for self-contained pages (the run report, the comparison page): the page
shell with its inline style, escaped cells, tables, values with intervals, nested values flattened."""

from __future__ import annotations

import html as _html
import math
import re
from typing import Any

import numpy as np

TEXT_CHARS = 1000

# Laid out for a 1280 px window and narrower. Words wrap whole (names break between their parts, see
# `breakable`); cells of free text, paths and URLs may wrap anywhere, so no table outgrows the page's column.
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
 max-width:1150px;padding:0 1rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
.meta{color:#555}.note{color:#8a5a00;background:#fff8e6;padding:.3rem .6rem;border-radius:4px}
.warning{color:#8b0000;background:#fdecea;padding:.4rem .7rem;border-left:4px solid #c62828;border-radius:4px}
.summary{font-size:1.08rem;background:#eef4fb;padding:.5rem .8rem;border-radius:4px}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem;max-width:100%}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top;overflow-wrap:break-word}
table.kv td,table.steps td:last-child,table.examples td:first-child,td.path{overflow-wrap:anywhere}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
td small,th small{color:#666;font-size:.8rem;white-space:nowrap}
table.examples td{white-space:pre-wrap}table.examples td:first-child{min-width:240px;width:30%}
td.wrong{color:#a00018;background:#fdf0f0}td.right{color:#1b5e20}
ul.warnings li{margin:.2rem 0}img{max-width:100%;height:auto}
.row{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-start}
details{margin:.6rem 0}pre{background:#f7f7f7;padding:.6rem;overflow-x:auto;font-size:.85rem;white-space:pre-wrap}
"""


def page(title: str, body: str, notes: list[str] = ()) -> str:
    """A whole self-contained HTML page: escaped ``title``, ``body`` (HTML) and ``notes`` as visible notes."""
    shown = "".join(f'<p class="note">{esc(n)}</p>' for n in notes)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{shown}{body}</body></html>\n")


def esc(value: Any) -> str:
    return _html.escape(str(value), quote=True)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any, limit: int = TEXT_CHARS) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "—"
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more chars)"


def table(headers: list[str], rows: list[list[str]], css: str = "") -> str:
    """A table from escaped header text and cells that are already HTML."""
    head = "".join(f"<th>{header(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def cell(value: Any, bold: bool = False) -> str:
    text = esc(fmt(value))
    css = ' class="num"' if is_number(value) else ""
    return f"<td{css}>{f'<strong>{text}</strong>' if bold else text}</td>"


def with_interval(value: Any, interval: Any, bold: bool = False) -> str:
    """A numeric cell: the value, and beneath it its 95% interval ``[low–high]`` when there is one."""
    if not is_number(value):
        return cell(value)
    text = esc(fmt(value))
    text = f"<strong>{text}</strong>" if bold else text
    if isinstance(interval, (list, tuple)) and len(interval) == 2 and all(map(is_number, interval)):
        text += f"<br><small>[{interval[0]:.4g}–{interval[1]:.4g}]</small>"
    return f'<td class="num">{text}</td>'


def interval_text(c: dict) -> str | None:
    """``low to high`` of a result's ``ci_low`` and ``ci_high`` (a paired change's interval), None without one."""
    if not (is_number(c.get("ci_low")) and is_number(c.get("ci_high"))):
        return None
    return f"{c['ci_low']:.4g} to {c['ci_high']:.4g}"


def breakable(name: str) -> str:
    """Escaped ``name`` that may break after ``_ / : +`` (``completion_tokens_mean``, ``model:org/name``),
    so a narrow column wraps it between its parts rather than inside a word."""
    return re.sub(r"([_/:+])", r"\1<wbr>", esc(name))


header = breakable


def img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">'


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys (``{"pii": {"train": {"EMAIL": 1}}}`` -> ``pii.train.EMAIL``).

    Lists are values, not nested further: see :func:`as_text`.
    """
    if isinstance(value, dict) and (value or not prefix):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def as_text(value: Any, shown: int = 20) -> str:
    """Any JSON value as one line of plain text: a list of records as ``key value, ...; ...``, a long list of
    numbers as its min, mean and max."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {as_text(v, shown)}" for k, v in value.items()) if value else "none"
    if not isinstance(value, list):
        return fmt(value, 200)
    if not value:
        return "none"
    if len(value) > shown and all(is_number(item) for item in value):
        data = np.asarray(value, dtype=float)
        return f"{len(value)} values: min {data.min():.4g}, mean {data.mean():.4g}, max {data.max():.4g}"
    records = all(isinstance(item, dict) for item in value)
    limit = 5 if records else shown
    joined = ("; " if records else ", ").join(as_text(item, shown) for item in value[:limit])
    return joined + (f" … ({len(value)} in all)" if len(value) > limit else "")


def kv_table(mapping: dict[str, Any]) -> str:
    """A two-column table of keys (dotted, see :func:`flatten`) and their values as text."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(as_text(v))}</td></tr>" for k, v in mapping.items())
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def lookup(data: Any, *paths: str) -> Any:
    """The first dotted path that resolves in nested dicts, e.g. ``"packages.torch"``."""
    for path in paths:
        node = data
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None
