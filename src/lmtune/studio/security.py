"""Who may talk to the studio, and which requests may change things.

* **Host.** Only requests naming an allowed host are served (a DNS-rebinding page that resolves its own
  name to 127.0.0.1 is refused).
* **Token.** With a token (required to bind anything but a loopback address), every request carries it:
  ``Authorization: Bearer T``, or the ``lmtune_studio`` cookie that ``/?token=T`` sets (HttpOnly,
  SameSite=Strict) so a browser opened on the printed link stays signed in.
* **Cross-site writes.** A request that changes state (POST, PUT, PATCH, DELETE) must carry the header
  ``X-Lmtune-Studio: 1``, which a page on another site cannot send without a CORS preflight that this app
  never answers, and its ``Origin``, when present, must be this server.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlencode, urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

COOKIE = "lmtune_studio"
CSRF_HEADER = "x-lmtune-studio"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def allowed_hosts(host: str) -> set[str]:
    """The host names a request may name when the studio listens on ``host``."""
    if host in LOOPBACK or host.startswith("127."):
        return {"127.0.0.1", "localhost", "::1", host}
    return set()  # bound to a public address: any name reaches it, and the token protects it


def _host_name(value: str) -> str:
    return (urlsplit(f"//{value}").hostname or "").lower()


def _refused(status: int, message: str) -> Response:
    return JSONResponse({"error": {"message": message, "code": status}}, status_code=status)


def token_given(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(COOKIE) or request.query_params.get("token")


def same(given: str, token: str) -> bool:
    """Whether ``given`` is ``token`` (compared in constant time)."""
    return hmac.compare_digest(given.encode(), token.encode())


def check(request: Request, token: str | None, hosts: set[str], admitted=lambda: False) -> Response | None:
    """The refusal for ``request``, or None when it may go on.

    Args:
        admitted: called when the studio token is missing or wrong: True lets the request on anyway (an
            annotator's token on an annotator's page, :func:`lmtune.studio.identity.admits`).
    """
    if hosts and _host_name(request.headers.get("host", "")) not in hosts:
        return _refused(400, "unknown Host header; open the studio at the address it printed")
    if token is not None:
        given = token_given(request)
        if (given is None or not same(given, token)) and not admitted():
            return _refused(401, "this studio needs its token: open the link it printed, or send "
                            "'Authorization: Bearer <token>'")
    if request.method not in SAFE_METHODS:
        if request.headers.get(CSRF_HEADER) != "1":
            return _refused(403, f"a request that changes state needs the header '{CSRF_HEADER}: 1' "
                            "(cross-site requests are refused)")
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower():
            return _refused(403, "cross-site request refused (its Origin is not this studio)")
    return None


def signed_in(request: Request, token: str | None) -> Response | None:
    """After a page load with a good ``?token=T``: a redirect that keeps the token in a cookie and drops it from
    the address bar; None for any other request."""
    if token is None or request.query_params.get("token") is None or request.method != "GET":
        return None
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
    redirect = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
    redirect.set_cookie(COOKIE, token, httponly=True, samesite="strict")
    return redirect
