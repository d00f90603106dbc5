"""The names people give annotators, queues and rounds: they go into URLs and file names, so a safe alphabet."""

from __future__ import annotations

import re
from typing import Any

from lmtune.errors import UserError


def check_name(name: Any, what: str, longest: int = 40) -> str:
    """``name`` when it is 1-``longest`` letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit.

    Args:
        what: the thing named, with its article, for the message ("an annotator", "a queue").

    Raises:
        UserError: any other name (source ``name``).
    """
    if not isinstance(name, str) or not re.fullmatch(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{longest - 1}}}", name):
        raise UserError(f"{what} name is 1-{longest} letters, digits, '_', '.' or '-', starting with a letter or "
                        "digit", source="name")
    return name
