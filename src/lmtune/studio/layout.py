"""The shell every studio page shares: the header with its navigation, the style sheet and the scripts.

Pages are HTML strings built here on the server. Every piece of text that comes from a run, a record or
a user goes through :func:`esc`; the scripts in ``static/`` write text with ``textContent`` only.
"""

from __future__ import annotations

import json
from typing import Any

from lmtune.report.html import esc

#: (path, label) of the navigation bar; a new page adds one entry.
NAV = [("/", "Runs"), ("/compare", "Compare"), ("/new", "New run"), ("/studies", "Studies"),
       ("/label", "Label"), ("/review", "Corrections"), ("/judge", "Judge")]
VERSION = "1"  # bumps the static files' cache key


def page(title: str, body: str, active: str = "/", scripts: tuple[str, ...] = (), data: Any = None) -> str:
    """A whole studio page.

    Args:
        title: the page title (escaped here).
        body: the page's HTML (already escaped where it holds user text).
        active: the navigation entry to highlight.
        scripts: file names in ``static/`` to load after ``studio.js`` (the shared helpers).
        data: a JSON value the scripts read from ``<script id="page-data">`` (escaped for HTML).
    """
    nav = "".join(f'<a href="{href}"{" class=active" if href == active else ""}>{esc(label)}</a>'
                  for href, label in NAV)
    tags = "".join(f'<script src="/static/{esc(name)}?v={VERSION}" defer></script>'
                   for name in ("studio.js", *scripts))
    payload = ""
    if data is not None:  # no "<" at all, so nothing inside can close the script element early
        payload = ('<script type="application/json" id="page-data">'
                   + json.dumps(data).replace("<", "\\u003c") + "</script>")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(title)} · lmtune studio</title>'
            f'<link rel="stylesheet" href="/static/studio.css?v={VERSION}">{tags}</head>'
            f'<body><header><span class="brand">lmtune studio</span><nav>{nav}</nav></header>'
            f'<main>{body}</main>{payload}</body></html>\n')


def message_page(title: str, message: str, status_class: str = "warning") -> str:
    """A page that only says something (a run that is not there, a refused request)."""
    return page(title, f'<h1>{esc(title)}</h1><p class="{esc(status_class)}">{esc(message)}</p>')
