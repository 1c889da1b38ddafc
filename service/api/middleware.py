"""Pure ASGI middleware: request ids, body-size limit, request metrics and one JSON log line per request.

Pure ASGI (not BaseHTTPMiddleware) so that the route still sees the client's disconnect on ``receive``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service.metrics import Metrics

log = logging.getLogger("service.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = "x-request-id"
QUIET_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
MAX_LOGGED_CHARS = 1000  # per string: every client-controlled value that reaches a log line is capped
MAX_LOGGED_ITEMS = 32  # per list


class RequestContextMiddleware:
    """Assigns ``scope["state"]["request_id"]`` (the client's X-Request-ID if sane), enforces the body limit,
    echoes X-Request-ID, counts and times the request, and logs it (routes add fields in ``state["log"]``)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, retry_after_s: int = 1,
                 body_timeout_s: float = 30.0) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["log"] = {}
        status = {"code": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            try:
                async with asyncio.timeout(self.body_timeout_s):  # no task per request, unlike wait_for
                    body = await self._read_body(headers, receive)
            except TimeoutError:
                self.metrics.rejections.labels("body_timeout").inc()
                state["log"]["error"] = "body_timeout"
                await _json_response(send_with_id, 408, {"error": f"the request body was not received within "
                                                                  f"{self.body_timeout_s:g} s"},
                                     [(b"connection", b"close")])
                return
            if body is None:
                self.metrics.rejections.labels("body_too_large").inc()
                await _json_response(send_with_id, 413, {"error": f"request body exceeds {self.max_body_bytes} bytes"})
            else:
                await self.app(scope, _replay(body, receive), send_with_id)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when its graceful-shutdown timeout ends (a client's
            # disconnect arrives as a message, not as a cancellation). Answer 503 instead of letting uvicorn
            # log a traceback and send a bare 500; the task then ends normally, as uvicorn wants.
            self.metrics.rejections.labels("shutting_down").inc()
            state["log"]["error"] = "shutting_down"
            if not status["started"]:
                await _json_response(send_with_id, 503, {"error": "the service shut down before the request was "
                                                                  "finished"},
                                     [(b"retry-after", str(self.retry_after_s).encode())])
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            self.metrics.rejections.labels("internal").inc()
            state["log"]["error"] = "internal"
            if not status["started"]:
                await _json_response(send_with_id, 500, {"error": f"internal error (request id {request_id})"})
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            endpoint = _endpoint(scope)
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.request_latency.labels(endpoint).observe(elapsed)
            quiet = scope["path"] in QUIET_PATHS and status["code"] < 400  # probes and scrapes: debug level
            fields = {"request_id": request_id, "method": scope["method"], "path": capped(scope["path"]),
                      "status": status["code"], "duration_ms": round(elapsed * 1000, 2),
                      **{key: capped(value) for key, value in state.get("log", {}).items()}}
            log.log(logging.DEBUG if quiet else logging.INFO, "request", extra=fields)

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes | None:
        """The whole body, or None once it is known to exceed the limit (declared or streamed)."""
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over the buffered body once, then the client's own messages (e.g. disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _endpoint(scope: Scope) -> str:
    """The matched route's path template (the router records it in the scope), or 'unmatched'."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


def capped(value: Any) -> Any:
    """A log field with strings cut to MAX_LOGGED_CHARS and lists to MAX_LOGGED_ITEMS (saying how much was cut)."""
    if isinstance(value, str) and len(value) > MAX_LOGGED_CHARS:
        return f"{value[:MAX_LOGGED_CHARS]}...(+{len(value) - MAX_LOGGED_CHARS} chars)"
    if isinstance(value, (list, tuple)):
        items = [capped(item) for item in value[:MAX_LOGGED_ITEMS]]
        return items + [f"...(+{len(value) - MAX_LOGGED_ITEMS} items)"] if len(value) > MAX_LOGGED_ITEMS else items
    return value


async def _json_response(send: Send, status: int, content: dict,
                         extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra_headers or [])]})
    await send({"type": "http.response.body", "body": body})
