"""Errors as the OpenAI API returns them: ``{"error": {"message", "type", "param", "code"}}``.

Every bad request gets a 4xx with this body (the official client raises its matching exception:
``BadRequestError``, ``AuthenticationError``, ``NotFoundError``, ``RateLimitError``); a 500 is
only ever an internal failure.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
         405: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
         429: "rate_limit_exceeded", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    """An error response in OpenAI's shape.

    Args:
        status: HTTP status.
        message: what is wrong and how to fix it.
        param: the request field at fault, if any.
        code: OpenAI's machine-readable code (``model_not_found``, ``context_length_exceeded``, ...).
    """

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.param, self.code)


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}
    return JSONResponse(body, status_code=status)


def model_not_found(name: str) -> APIError:
    return APIError(404, f"The model `{name}` does not exist; GET /v1/models lists the served models.",
                    "model", "model_not_found")


def install(app: FastAPI) -> None:
    """Route every error FastAPI or a handler raises to an OpenAI-shaped response."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _validation_response(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"Unknown request URL: {request.method} {request.url.path}."
        elif message == "There was an error parsing the body" and exc.__cause__ is not None:  # FastAPI's: say why
            cause = str(exc.__cause__).split(";")[0][:200]
            message = f"We could not parse the body of your request ({cause}). Send UTF-8 JSON, nested reasonably."
        return error_response(exc.status_code, message)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")


def _validation_response(errors) -> JSONResponse:
    """The first validation problem, phrased as OpenAI phrases it, with the field as ``param``."""
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ())]
    if loc and loc[0] in ("body", "query", "path", "header", "form"):
        loc = loc[1:]
    param = ".".join(loc) or None
    kind = err.get("type", "")
    if kind == "json_invalid":
        return error_response(400, "We could not parse the JSON body of your request: "
                              f"{err.get('ctx', {}).get('error', 'invalid JSON')}. Send valid JSON.")
    if kind == "missing":
        return error_response(400, f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if param is None:
        return error_response(400, f"The request body must be a JSON object ({err.get('msg', 'invalid')}).")
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return error_response(400, f"Invalid value for '{param}': {msg}.", param, "invalid_value")
