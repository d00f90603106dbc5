"""Inference handed to another OpenAI-compatible server (vLLM) behind lmtune's own API.

``lmtune serve --engine vllm`` starts vLLM's OpenAI server on a private port and routes
``/v1/chat/completions``, ``/v1/completions`` and the model list to it through an :class:`Upstream`;
lmtune keeps its files and fine-tuning jobs, its API key and its request checks (a request lmtune
refuses is refused the same way, before it reaches the upstream). Any OpenAI-compatible server can
be the upstream: the tests use a second ``lmtune serve``.

Clients use lmtune's names (run directory names, the base's name); ``model_map`` turns each into the
upstream's name for it, and replies (streamed chunks too) carry the client's name back. The body is
otherwise sent as the client sent it, and streamed replies are relayed chunk by chunk as they come.
Failures are OpenAI-shaped: an upstream that cannot be reached is a 502, one that does not answer
within ``timeout`` a 504, one known to have exited (``mark_dead``) a 503; the upstream's own 4xx
errors pass through in OpenAI's ``{"error": {...}}`` shape, and a failure in the middle of a stream
ends it with an error event, as lmtune's own engine does.
"""

from __future__ import annotations

import json

import httpx2 as httpx
from fastapi.responses import JSONResponse, StreamingResponse

from lmtune.serve.errors import APIError, model_not_found


class UpstreamError(APIError):
    """A failure of the upstream server, not of the request: a 5xx of type ``server_error``."""

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": "server_error", "param": None, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


class Upstream:
    """An OpenAI-compatible server that answers the inference requests of this one.

    Args:
        base_url: where it listens, e.g. ``http://127.0.0.1:8001``.
        model_map: the names clients ask for -> the upstream's names for them (only these are served).
        api_key: sent to the upstream as a bearer token (clients never see it).
        timeout: seconds to wait for the upstream's reply, or between two chunks of a stream.
        connect_timeout: seconds to wait for a connection.
        label: how messages name the upstream (``vLLM``).
        bases: served names that fine-tuning jobs may train on -> the model reference to train.
    """

    def __init__(self, base_url: str, model_map: dict[str, str], api_key: str | None = None, timeout: float = 600,
                 connect_timeout: float = 10, label: str = "the inference server", bases: dict[str, str] | None = None):
        self.base_url, self.model_map, self.api_key = base_url.rstrip("/"), dict(model_map), api_key
        self.timeout, self.connect_timeout, self.label, self.bases = timeout, connect_timeout, label, dict(bases or {})
        self.dead: str | None = None
        self._client: httpx.AsyncClient | None = None

    def names(self) -> list[str]:
        return list(self.model_map)

    def mark_dead(self, reason: str) -> None:
        """The upstream has exited (``reason``): requests get a 503 saying so instead of trying it."""
        self.dead = reason

    @property
    def client(self) -> httpx.AsyncClient:
        """One connection pool, made in the serving event loop on first use."""
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers,
                                             timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def forward(self, path: str, payload: dict):
        """POST ``payload`` (a client's request body) to ``path`` upstream; the reply as the client gets it.

        Raises:
            APIError: an unknown model (404), the upstream's own 4xx, or its failure (502, 503, 504).
        """
        name = payload.get("model")
        if name not in self.model_map:
            raise model_not_found(str(name))
        target = self.model_map[name]
        request = self.client.build_request("POST", path, json={**payload, "model": target})
        response = await self._send(request)
        if response.status_code != 200:
            raise await self._refusal(response)
        if payload.get("stream"):
            return StreamingResponse(self._relay(response, name, target), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        data = await self._json(response)
        if isinstance(data, dict) and data.get("model") == target:
            data["model"] = name
        return JSONResponse(data)

    async def models(self) -> list[dict]:
        """The upstream's model objects of the served names, under the names clients use."""
        response = await self._send(self.client.build_request("GET", "/v1/models"))
        if response.status_code != 200:
            raise await self._refusal(response)
        data = await self._json(response)
        listed = {item.get("id"): item for item in data.get("data", []) if isinstance(item, dict)}
        return [_renamed_model(listed[target], name, self.model_map)
                for name, target in self.model_map.items() if target in listed]

    async def model(self, name: str) -> dict:
        """One served model's object (404 for a name this server does not serve, or the upstream lacks)."""
        if name not in self.model_map:
            raise model_not_found(name)
        found = [m for m in await self.models() if m["id"] == name]
        if not found:
            raise APIError(404, f"The model `{name}` is not served by {self.label}; GET /v1/models lists the served "
                           "models.", "model", "model_not_found")
        return found[0]

    async def healthy(self) -> bool:
        """Whether the upstream answers its ``/health`` with 200 (within 5 seconds)."""
        if self.dead:
            return False
        try:
            return (await self.client.get("/health", timeout=5)).status_code == 200
        except httpx.HTTPError:
            return False

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``, reading only the status and headers; the body is read (or relayed) by the caller."""
        if self.dead:
            raise self._gone()
        try:
            return await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._failed(exc) from None

    async def _json(self, response: httpx.Response):
        try:
            return json.loads(await response.aread())
        except httpx.HTTPError as exc:
            raise self._failed(exc) from None
        except ValueError:
            raise UpstreamError(502, f"{self.label} answered with a body that is not JSON.", None,
                                "upstream_error") from None
        finally:
            await response.aclose()

    async def _refusal(self, response: httpx.Response) -> APIError:
        """The upstream's error reply as an OpenAI error: its 4xx as it is, anything else a 502."""
        try:
            text = (await response.aread()).decode("utf-8", "replace")
        except httpx.HTTPError as exc:
            return self._failed(exc)
        finally:
            await response.aclose()
        message, param, code = _error_fields(text)
        if 400 <= response.status_code < 500:
            return APIError(response.status_code, message, param, code)
        return UpstreamError(502, f"{self.label} failed (HTTP {response.status_code}): {message}", None,
                             "upstream_error")

    async def _relay(self, response: httpx.Response, name: str, target: str):
        """The upstream's SSE stream, chunk by chunk; ``model`` renamed when the names differ."""
        try:
            if name == target:
                async for chunk in response.aiter_bytes():
                    yield chunk
            else:
                async for line in response.aiter_lines():
                    yield _renamed(line, target, name) + "\n"
        except httpx.HTTPError as exc:
            error = self._failed(exc)
            event = {"error": {"message": error.message, "type": "server_error", "param": None, "code": error.code}}
            yield f"\n\ndata: {json.dumps(event)}\n\n"
        finally:
            await response.aclose()

    def _failed(self, exc: httpx.HTTPError) -> UpstreamError:
        if self.dead:
            return self._gone()
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamError(504, f"{self.label} ({self.base_url}) did not answer within {self.timeout:g} s "
                                 f"({type(exc).__name__}); retry, or ask for fewer tokens.", None, "upstream_timeout")
        return UpstreamError(502, f"{self.label} ({self.base_url}) cannot be reached ({type(exc).__name__}: {exc}); "
                             "see the console of lmtune serve.", None, "upstream_unreachable")

    def _gone(self) -> UpstreamError:
        return UpstreamError(503, f"{self.label} is not running ({self.dead}); restart lmtune serve.", None,
                             "upstream_unavailable")


def _error_fields(text: str) -> tuple[str, str | None, str | None]:
    """(message, param, code) of an error body: OpenAI's ``{"error": {...}}``, or vLLM's older flat one."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        error = data if isinstance(data, dict) and "message" in data else {"message": text.strip()[:500]}
    code = error.get("code")
    param = error.get("param")
    return (str(error.get("message") or "no message"), param if isinstance(param, str) else None,
            code if isinstance(code, str) else None)


def _renamed(line: str, target: str, name: str) -> str:
    """One SSE line with the upstream's model name replaced by the client's."""
    if not line.startswith("data:") or line[5:].strip() == "[DONE]":
        return line
    try:
        data = json.loads(line[5:])
    except ValueError:
        return line
    if isinstance(data, dict) and data.get("model") == target:
        data["model"] = name
        return "data: " + json.dumps(data, ensure_ascii=False)
    return line


def _renamed_model(item: dict, name: str, model_map: dict[str, str]) -> dict:
    """An upstream model object under the client's name; a LoRA's ``parent`` (its base) renamed too."""
    out = {**item, "id": name}
    if "parent" in item:
        out["parent"] = next((n for n, target in model_map.items() if target == item["parent"]), item["parent"])
    return out
