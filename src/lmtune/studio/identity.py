"""Who is asking: the studio's owner, or one of its annotators.

* **Owner**: on a studio without a token, anyone who reaches it (it listens on loopback only); with a token,
  whoever carries it (see :mod:`lmtune.studio.security`). The owner creates queues, adds annotators, reads
  everyone's answers, agreement and exports.
* **Annotator**: a request with an annotator token (``X-Lmtune-Annotator: T``, or the ``lmtune_annotator``
  cookie that opening ``<page>?annotator=T`` sets). On a studio with a token, an annotator token opens only the
  labelling and judging pages and their API (:data:`ANNOTATOR_PATHS`), and every answer an annotator reads or
  changes is their own. On a studio without one, a request with no annotator token answers as ``local``.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from lmtune.guidance import annotators, db
from lmtune.studio import security

HEADER = "x-lmtune-annotator"
COOKIE = "lmtune_annotator"
QUERY = "annotator"
ANNOTATOR_PATHS = ("/label", "/api/label/", "/judge", "/api/judge/", "/static/")


class NotAnnotator(Exception):
    """The request names no annotator where one is needed (401), or a token no annotator has."""


class OwnerOnly(Exception):
    """An annotator asking for what only the studio's owner may see or do (403)."""


def database(request: Request):
    """The guidance database's path for this request's studio."""
    return db.path_in(request.app.state.studio.state_dir)


def _given(request: Request) -> str | None:
    return request.headers.get(HEADER) or request.cookies.get(COOKIE) or request.query_params.get(QUERY)


def lookup(studio, request: Request) -> str | None:
    """The annotator named by the request's token, or None (no token, or one no annotator has); looked up once per
    request (the guard asks, then the handler)."""
    token = _given(request)
    if not token:
        return None
    if getattr(request.state, "annotator_token", None) != token:
        with db.opened(db.path_in(studio.state_dir), annotators.SCHEMA) as conn:
            request.state.annotator = annotators.find(conn, token)
        request.state.annotator_token = token
    return request.state.annotator


def admits(studio, request: Request) -> bool:
    """Whether an annotator token lets this request past a studio token it does not carry."""
    path = request.url.path
    return (studio.token is not None and path.startswith(ANNOTATOR_PATHS)
            and lookup(studio, request) is not None)


def annotator(request: Request) -> str:
    """The annotator answering: from their token, or ``local`` on a studio without a token.

    Raises:
        NotAnnotator: a token no annotator has, or none on a studio with a token.
    """
    studio = request.app.state.studio
    if _given(request):
        name = lookup(studio, request)
        if name is None:
            raise NotAnnotator("this annotator token is not known here; open the link the studio's owner sent you")
        return name
    if studio.token is not None:
        raise NotAnnotator("labelling on this studio needs your annotator token: open the link the studio's owner "
                           "sent you, or send 'X-Lmtune-Annotator: <token>'")
    return annotators.LOCAL


def owner(request: Request) -> bool:
    """Whether the request comes from the studio's owner (not from an annotator token alone)."""
    studio = request.app.state.studio
    if studio.token is None:
        return _given(request) is None
    given = security.token_given(request)
    return given is not None and security.same(given, studio.token)


def require_owner(request: Request, message: str) -> None:
    """Refuse anyone but the studio's owner.

    Raises:
        OwnerOnly: with ``message``, for an annotator.
    """
    if not owner(request):
        raise OwnerOnly(message)


def asker(request: Request, owner_as: str | None = None) -> str | None:
    """The annotator asking, or ``owner_as`` for the studio's owner who came without an annotator token.

    Raises:
        NotAnnotator: neither an annotator nor the owner.
    """
    try:
        return annotator(request)
    except NotAnnotator:
        if owner(request):
            return owner_as
        raise


def signed_in(request: Request) -> Response | None:
    """After opening a page with ``?annotator=T``: a redirect that keeps T in a cookie and drops it from the
    address bar; None for any other request."""
    if request.query_params.get(QUERY) is None or request.method != "GET" or request.url.path.startswith("/api/"):
        return None
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != QUERY])
    redirect = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
    redirect.set_cookie(COOKIE, request.query_params[QUERY], httponly=True, samesite="strict")
    return redirect
