"""What the labelling, judging and review handlers share: reading a request's JSON body and answering an error.

An error is ``{"error": {"message", "code"}}`` with its status under ``/api/``, and a page that says the message
everywhere else. Who may ask (the studio's owner or an annotator) is :mod:`lmtune.studio.identity`'s.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from lmtune.errors import UserError
from lmtune.studio import layout


async def json_body(request: Request, not_object: str = "the request body must be a JSON object") -> dict[str, Any]:
    """The request's body, a JSON object.

    Raises:
        UserError: a body that is not JSON, or (saying ``not_object``) JSON that is not an object.
    """
    try:
        body = await request.json()
    except ValueError:
        raise UserError("the request body is not JSON", source="body") from None
    if not isinstance(body, dict):
        raise UserError(not_object, source="body")
    return body


def error_response(request: Request, status: int, message: str, title: str) -> Response:
    """``message`` with ``status``: JSON for a request under ``/api/``, else a page titled ``title``."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": {"message": message, "code": status}}, status_code=status)
    return HTMLResponse(layout.message_page(title, message), status_code=status)
