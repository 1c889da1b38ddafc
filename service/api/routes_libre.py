"""LibreTranslate-compatible endpoints, so existing LibreTranslate clients work unchanged.

Differences a client may notice: ``detectedLanguage`` is restricted to the languages this service
translates from, and errors for overload (429) and deadlines (504) come from the batching queue.
"""

from __future__ import annotations

from typing import TypeVar

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ValidationError

from service import languages
from service.api.deps import check_api_key, get_engine, run_job
from service.api.schemas import (
    DetectedLanguage,
    ErrorResponse,
    LanguageEntry,
    LibreDetectRequest,
    LibreTranslateRequest,
    LibreTranslateResponse,
)
from service.engine import TranslationEngine, TranslationJob, check_unicode
from service.errors import InvalidJob, NotReady

router = APIRouter(tags=["LibreTranslate-compatible"])

Body = TypeVar("Body", bound=BaseModel)

ERRORS = {400: {"model": ErrorResponse, "description": "Invalid request"},
          401: {"model": ErrorResponse, "description": "API keys are configured and the request carries none"},
          403: {"model": ErrorResponse, "description": "Invalid API key"},
          413: {"model": ErrorResponse, "description": "Request body larger than MT_MAX_BODY_BYTES"},
          429: {"model": ErrorResponse, "description": "Queue full, or the API key's rate limit reached: retry "
                                                       "after the Retry-After header's seconds"},
          500: {"model": ErrorResponse, "description": "Translation error"},
          503: {"model": ErrorResponse, "description": "Models loading or shutting down"},
          504: {"model": ErrorResponse, "description": "Could not finish before the request's deadline"}}


def _form_or_json_body(schema: type[BaseModel]) -> dict:
    """OpenAPI: the body may be JSON or a form, like LibreTranslate's (the route parses it itself)."""
    inline = schema.model_json_schema()
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": inline},
        "application/x-www-form-urlencoded": {"schema": inline},
        "multipart/form-data": {"schema": inline}}}}


async def parse_body(request: Request, schema: type[Body]) -> Body:
    """A JSON or form body, its API key checked, validated against ``schema``; LibreTranslate-style 400s.

    The key is checked before the fields, so a client without a valid key learns nothing about them.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.form()
            data = {key: (values if len(values := form.getlist(key)) > 1 else values[0]) for key in form.keys()}
        else:
            data = await request.json()  # any other (or no) content type is read as JSON, like LibreTranslate
    except ValueError as error:  # invalid JSON or UTF-8
        raise InvalidJob(f"Invalid request: body is neither valid JSON nor a form ({error})") from error
    except RecursionError as error:
        raise InvalidJob("Invalid request: the JSON body is nested too deeply") from error
    if not isinstance(data, dict):
        raise InvalidJob("Invalid request: the body must be a JSON object")
    api_key = data.get("api_key")
    check_api_key(request, api_key if isinstance(api_key, str) else None)
    try:
        return schema.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        if first["type"] == "missing":
            raise InvalidJob(f"Invalid request: missing {field} parameter") from error
        raise InvalidJob(f"Invalid request: {field}: {first['msg']}") from error


@router.post("/translate", response_model=LibreTranslateResponse, response_model_exclude_none=True,
             responses=ERRORS, openapi_extra=_form_or_json_body(LibreTranslateRequest),
             summary="Translate text (LibreTranslate API)")
async def translate(request: Request, response: Response,
                    engine: TranslationEngine = Depends(get_engine)) -> LibreTranslateResponse:
    body = await parse_body(request, LibreTranslateRequest)
    single = isinstance(body.q, str)
    texts = [body.q] if single else body.q
    if not texts:
        raise InvalidJob("Invalid request: q is an empty list")
    if body.alternatives > engine.settings.max_beam_size - 1:
        raise InvalidJob(f"Invalid request: alternatives must be between 0 and {engine.settings.max_beam_size - 1}")
    job = TranslationJob(texts, body.source, body.target, body.format, n_best=1 + body.alternatives)
    result = await run_job(request, response, engine, job)
    translated = [t.text for t in result.translations]
    alternatives = [[text for text, _ in t.alternatives] for t in result.translations]
    detected = None
    if languages.normalize_code(body.source) == languages.AUTO:
        detected = [DetectedLanguage(confidence=round(100 * t.detected.confidence, 1), language=t.detected.language)
                    for t in result.translations if t.detected is not None]
    return LibreTranslateResponse(
        translatedText=translated[0] if single else translated,
        alternatives=(alternatives[0] if single else alternatives) if body.alternatives else None,
        detectedLanguage=(detected[0] if single else detected) if detected else None)


@router.post("/detect", response_model=list[DetectedLanguage], responses=ERRORS,
             openapi_extra=_form_or_json_body(LibreDetectRequest),
             summary="Detect the language of a text, among the served source languages")
async def detect(request: Request, engine: TranslationEngine = Depends(get_engine)) -> list[DetectedLanguage]:
    body = await parse_body(request, LibreDetectRequest)
    if not engine.ready:
        raise NotReady("models are still loading")
    if len(body.q) > engine.settings.max_text_chars:
        raise InvalidJob(f"Invalid request: q has more than {engine.settings.max_text_chars} characters")
    check_unicode(body.q, "q")
    return [DetectedLanguage(confidence=round(100 * d.confidence, 1), language=d.language)
            for d in engine.detect(body.q)]


@router.get("/languages", response_model=list[LanguageEntry], summary="Served languages (LibreTranslate format)")
async def list_languages(engine: TranslationEngine = Depends(get_engine)) -> list[LanguageEntry]:
    if engine.registry is None:
        raise NotReady("models are still loading")
    registry = engine.registry
    codes = sorted(set(registry.source_languages) | set(registry.target_languages))
    return [LanguageEntry(code=code, name=languages.name(code), targets=registry.targets_of(code)) for code in codes]
