"""The FastAPI application: routes, middleware, error mapping, and the engine's life cycle.

Start-up verifies every model directory (cards and checksums) before the server accepts connections, so a
broken deployment fails at once with the broken file named. Loading the sessions and warming up then run
in the background: /health/live answers at once, /health/ready turns 200 when every model is warm.
Shutdown (SIGTERM through uvicorn) lets in-flight requests finish, then drains the batcher.
API keys (service.auth) are read when the app is made, so a bad key file fails before anything listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from prometheus_client import start_http_server
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api import routes_files, routes_libre, routes_native, routes_ops, routes_web
from service.api.deps import ClientDisconnected
from service.api.middleware import RequestContextMiddleware
from service.auth import ApiKeys
from service.config import Settings
from service.engine import TranslationEngine
from service.errors import (
    ConfidenceUnavailable,
    EngineError,
    Forbidden,
    InvalidJob,
    JobTimeout,
    NotReady,
    Overloaded,
    RateLimited,
    RetryLater,
    ShuttingDown,
    Unauthorized,
)
from service.filestore import FileStore
from service.registry import ModelLoadError, VerifiedModel

log = logging.getLogger(__name__)

STATUS = {InvalidJob: 400, ConfidenceUnavailable: 400, Unauthorized: 401, Forbidden: 403, NotReady: 503, ShuttingDown: 503, Overloaded: 429,
          RateLimited: 429, JobTimeout: 504}
CLIENT_CLOSED_REQUEST = 499  # nginx's code for "the client went away"; only ever seen in logs and metrics


def create_app(settings: Settings | None = None, engine: TranslationEngine | None = None,
               verified: tuple[list[VerifiedModel], dict[str, str]] | None = None) -> FastAPI:
    """The app. Without ``engine`` it makes and loads one from ``settings`` at start-up (and stops it at
    shutdown); ``verified`` skips the checksum pass when the caller (the CLI) already did it."""
    settings = settings or Settings()
    api_keys = ApiKeys.from_settings(settings)  # raises ApiKeyConfigError now rather than at the first request
    owns_engine = engine is None
    engine = engine or TranslationEngine(settings)
    files = FileStore(settings.files_dir, settings.files_ttl_s)  # translated files waiting for their download

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics_server = None
        if settings.metrics_port is not None:
            metrics_server, _ = start_http_server(settings.metrics_port, settings.metrics_host or settings.host,
                                                  registry=engine.metrics.registry)
            app.state.metrics_port = metrics_server.server_port
            log.info("metrics on their own port", extra={"metrics_port": app.state.metrics_port})
        sweeper = asyncio.create_task(files.run_sweeper())
        try:
            async with _engine_life(engine, owns_engine, verified):
                yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            files.close()
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()

    app = FastAPI(title="Seq2Seq MT", version="0.1.0", lifespan=lifespan,
                  description="Self-hosted neural machine translation: a LibreTranslate-compatible API "
                              "(/translate, /translate_file, /languages, /detect) and a native API (/v1) with "
                              "n-best lists, scores and attention. See docs/service.md.")
    app.state.engine = engine
    app.state.settings = settings
    app.state.api_keys = api_keys
    app.state.files = files
    app.include_router(routes_libre.router)
    app.include_router(routes_files.router)
    app.include_router(routes_native.router)
    app.include_router(routes_ops.router)
    if settings.metrics_port is None:
        app.include_router(routes_ops.metrics_router)
    app.include_router(routes_web.router)
    _add_error_handlers(app, engine)
    app.add_middleware(RequestContextMiddleware, metrics=engine.metrics, max_body_bytes=settings.max_body_bytes,
                       retry_after_s=settings.retry_after_s, body_timeout_s=settings.body_timeout_s)
    if settings.cors_origins:  # added last = outermost: the request middleware's own 413/500/503 get CORS headers too
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"],
                           expose_headers=["X-Request-ID", "X-Queue-Time-Ms", "X-Inference-Time-Ms", "Retry-After"])
    return app


@contextlib.asynccontextmanager
async def _engine_life(engine: TranslationEngine, owns_engine: bool,
                       verified: tuple[list[VerifiedModel], dict[str, str]] | None) -> AsyncIterator[None]:
    """Verify (fast, before listening), load in the background, and at shutdown drain the engine it made."""
    loader = None
    if engine.status == "starting":
        try:
            checked = verified or engine.verify()
        except ModelLoadError as error:
            log.critical("cannot start: %s", error)
            raise
        loader = asyncio.get_running_loop().run_in_executor(None, _load, engine, checked)
    yield
    if loader is not None:
        with contextlib.suppress(Exception):
            await loader
    if owns_engine:
        log.info("shutting down: draining the batch queue")
        await asyncio.get_running_loop().run_in_executor(None, engine.stop)


def _load(engine: TranslationEngine, checked: tuple[list[VerifiedModel], dict[str, str]]) -> None:
    try:
        engine.load(*checked)
    except Exception:
        log.exception("model loading failed; /health/ready stays 503")
        raise
    log.info("ready", extra={"models": sorted(engine.registry.models) if engine.registry else []})


def _add_error_handlers(app: FastAPI, engine: TranslationEngine) -> None:
    """Every error is ``{"error": "..."}`` (LibreTranslate's shape), also on the native API."""
    metrics = engine.metrics

    def error(request: Request, status: int, message: str, reason: str, headers: dict | None = None) -> Response:
        request.state.log["error"] = reason
        metrics.rejections.labels(reason).inc()
        return JSONResponse({"error": _printable(message)}, status_code=status, headers=headers)

    @app.exception_handler(EngineError)
    async def engine_error(request: Request, exc: EngineError) -> Response:
        headers = {}
        if isinstance(exc, RetryLater):
            headers["Retry-After"] = str(exc.retry_after_s)
        elif isinstance(exc, (NotReady, ShuttingDown)):  # loading, or going away: another replica, or later
            headers["Retry-After"] = str(app.state.settings.retry_after_s)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = "Bearer"
        return error(request, STATUS.get(type(exc), 500), str(exc), exc.reason, headers)

    @app.exception_handler(ClientDisconnected)
    async def client_disconnected(request: Request, exc: ClientDisconnected) -> Response:
        request.state.log["error"] = "client_disconnected"
        metrics.rejections.labels("client_disconnected").inc()
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid"}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
        return error(request, 400, f"Invalid request: {where}: {first.get('msg')}", "invalid")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        request.state.log["error"] = "http"
        return JSONResponse({"error": _printable(str(exc.detail))}, status_code=exc.status_code, headers=exc.headers)


def _printable(message: str) -> str:
    """A message that JSON can carry as UTF-8 (one that quotes a client's lone surrogate would not encode)."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")
