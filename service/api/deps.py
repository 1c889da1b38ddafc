"""Shared pieces of the routes: the engine dependency, API keys, running a job until the client leaves."""

from __future__ import annotations

import asyncio
import contextlib
import email.message
from dataclasses import replace
from functools import partial
from typing import Any

from fastapi import HTTPException, Request, Response

from service.auth import ApiKeys
from service.config import Settings
from service.engine import JobResult, TranslationEngine, TranslationJob
from service.errors import Forbidden, Unauthorized


class ClientDisconnected(Exception):
    """The client closed the connection before its response was ready."""


# Dependencies are coroutines: FastAPI runs a plain function dependency in its thread pool, a round trip between
# threads that cost more per request than the lookup itself.
async def get_engine(request: Request) -> TranslationEngine:
    return request.app.state.engine


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def check_api_key(request: Request, body_key: str | None = None) -> None:
    """With API keys configured: the key from ``Authorization: Bearer`` (else ``body_key``, LibreTranslate's
    ``api_key`` field) must be a configured one (401 none, 403 unknown) with requests left (429)."""
    keys: ApiKeys | None = request.app.state.api_keys
    if keys is None:
        return
    address = request.client.host if request.client else "unknown"
    keys.failures.check(address)
    ring = keys.current()
    try:
        key = ring.authenticate(_bearer_token(request) or body_key)
    except (Unauthorized, Forbidden):
        keys.failures.failed(address)
        raise
    request.state.log["api_key"] = key.id
    ring.admit(key)
    request.state.charge_work = partial(ring.charge_work, key)


async def require_api_key(request: Request) -> None:
    """The dependency form of ``check_api_key`` (header only), for routes whose body has no api_key field."""
    check_api_key(request)


async def require_json(request: Request) -> None:
    """415 unless the body is declared as JSON (the native API does not guess)."""
    message = email.message.Message()
    message["content-type"] = request.headers.get("content-type", "")
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (subtype == "json" or subtype.endswith("+json")):
        raise HTTPException(415, "Content-Type must be application/json")


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <API key>'")
    return token.strip()


def flow_of(request: Request) -> str:
    """Whose work this is, for the scheduler's fair shares: the API key, or the client's address."""
    return request.state.log.get("api_key") or f"client {request.client.host if request.client else 'unknown'}"


async def run_job(request: Request, response: Response, engine: TranslationEngine, job: TranslationJob) -> JobResult:
    """Run a translation job, cancelling its queued work if the client disconnects; adds timing headers and
    log fields (text only when MT_LOG_TEXT is on)."""
    fields: dict[str, Any] = request.state.log
    fields.update(source=job.source, target=job.target, texts=len(job.texts), chars=sum(map(len, job.texts)),
                  beam_size=job.beam_size, n_best=job.n_best)
    if engine.settings.log_text:
        fields["text"] = job.texts
    job = replace(job, flow=flow_of(request), charge_work=getattr(request.state, "charge_work", None))
    result = await cancel_on_disconnect(request, engine.translate(job))
    fields.update(models=result.models, sentences=result.sentences, cache_hits=result.cache_hits,
                  queue_ms=round(result.queue_ms, 2), inference_ms=round(result.inference_ms, 2))
    if engine.settings.log_text:
        fields["translation"] = [t.text for t in result.translations]
    response.headers["X-Queue-Time-Ms"] = f"{result.queue_ms:.2f}"
    response.headers["X-Inference-Time-Ms"] = f"{result.inference_ms:.2f}"
    return result


async def cancel_on_disconnect(request: Request, work: Any) -> Any:
    """Await ``work`` unless the client disconnects first; then cancel it and raise ``ClientDisconnected``.

    The body has been read by now, so the next ASGI message can only be the disconnect.
    """
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        watcher.cancel()
        raise
    watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # nobody is left to tell
        await task
    raise ClientDisconnected()
