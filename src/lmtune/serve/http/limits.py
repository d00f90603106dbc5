"""A bound on request bodies: a JSON body past the limit is a 413 before it is held in memory.

Uploads (``/v1/files``) stream to disk and are bounded separately by the disk; every other endpoint
takes JSON, which is parsed whole, so one client could otherwise make the server hold a body of
any size. Checked on ``Content-Length`` and, for chunked bodies, on the bytes as they arrive.

FastAPI 0.165's ``max_body_size`` does the counting too, but answers with Starlette's plain-text
"Content Too Large", which is not the OpenAI error body every client of this API parses; this
middleware answers in that shape.
"""

from __future__ import annotations

from lmtune.serve.errors import error_response

MAX_JSON_BODY = 16 * 2**20  # far above any chat request a 2k-32k-token context can use


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware refusing JSON bodies over ``limit`` bytes with HTTP 413."""

    def __init__(self, app, limit: int = MAX_JSON_BODY, exempt: tuple[str, ...] = ("/v1/files",)):
        self.app, self.limit, self.exempt = app, limit, exempt

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge(f"the request body is larger than {self.limit // 2**20} MB")
            return message

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        response = error_response(413, f"The request body is larger than {self.limit // 2**20} MB; send a shorter "
                                  "request (training data goes to POST /v1/files).", None, "request_too_large")
        await response(scope, receive, send)
