"""Operations endpoints: liveness, readiness, Prometheus metrics (``metrics_router``: on the API port unless
MT_METRICS_PORT moves them to a port of their own). None of them needs an API key."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse

from service.api.deps import get_engine
from service.api.schemas import HealthResponse
from service.engine import TranslationEngine

router = APIRouter(tags=["operations"])
metrics_router = APIRouter(tags=["operations"])


@router.get("/health/live", response_model=HealthResponse, summary="The process is up (models may be loading)")
async def live() -> HealthResponse:
    return HealthResponse(status="alive")


@router.get("/health/ready", response_model=HealthResponse,
            responses={503: {"model": HealthResponse, "description": "Loading, failed or shutting down"}},
            summary="Every model is loaded and warmed up")
async def ready(engine: TranslationEngine = Depends(get_engine)) -> JSONResponse:
    ready = engine.ready  # first: a dead scheduler turns the status to failed
    registry = engine.registry
    body = HealthResponse(status=engine.status, models=sorted(registry.models) if registry else [],
                          broken_models=registry.broken if registry else {}, error=engine.failure)
    if ready:
        return JSONResponse(body.model_dump(exclude_none=True))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=503,  # loading, failed, stopping: later
                        headers={"Retry-After": str(engine.settings.retry_after_s)})


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(engine: TranslationEngine = Depends(get_engine)) -> Response:
    return Response(engine.metrics.render(), media_type=engine.metrics.content_type)
