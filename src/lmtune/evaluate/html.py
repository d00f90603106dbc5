"""Small HTML building blocks for self-contained reports: escaped cells, tables, nested values."""

from __future__ import annotations

import html as _html
import json
import math
from typing import Any

import numpy as np

TEXT_CHARS = 1000



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
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def cell(value: Any, bold: bool = False) -> str:
    text = esc(fmt(value))
    css = ' class="num"' if is_number(value) else ""
    return f"<td{css}>{f'<strong>{text}</strong>' if bold else text}</td>"


def img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">'


def nested_html(value: Any, depth: int = 0) -> str:
    """Any JSON value as HTML: dicts become key/value tables, nested as deep as the data.

    Args:
        value: a JSON-like value.
        depth: current nesting level; past 8 the value is shown as JSON text.

    Returns:
        Escaped HTML.
    """
    if depth > 8:
        return f"<code>{esc(fmt(json.dumps(value, default=str)))}</code>"
    if isinstance(value, dict):
        if not value:
            return "<em>empty</em>"
        rows = "".join(f"<tr><th>{esc(k)}</th><td>{nested_html(v, depth + 1)}</td></tr>"
                       for k, v in value.items())
        return f'<table class="kv">{rows}</table>'
    if isinstance(value, list):
        return list_html(value, depth)
    return esc(fmt(value))


def list_html(items: list, depth: int, shown: int = 20) -> str:
    if not items:
        return "<em>none</em>"
    if all(isinstance(item, dict) for item in items):
        keys = list(dict.fromkeys(k for item in items[:shown] for k in item))
        rows = [[f"<td>{nested_html(item.get(k), depth + 1)}</td>" for k in keys]
                for item in items[:shown]]
        more = f"<p>… {len(items) - shown} more</p>" if len(items) > shown else ""
        return table(keys, rows, "kv") + more
    if len(items) > shown and all(is_number(item) for item in items):
        data = np.asarray(items, dtype=float)
        return esc(f"{len(items)} values: min {data.min():.4g}, mean {data.mean():.4g}, "
                    f"max {data.max():.4g}")
    text = ", ".join(fmt(item, 200) for item in items[:shown])
    return esc(text + (f", … ({len(items) - shown} more)" if len(items) > shown else ""))


def lookup(data: Any, *paths: str) -> Any:
    """The first dotted path that resolves in nested dicts, e.g. ``"packages.torch"``."""
    for path in paths:
        node = data
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None
