"""LibreTranslate-compatible endpoints, so existing LibreTranslate clients work unchanged.

Parameters come from the query string, a form (urlencoded or multipart) or a JSON body, or a mix of them, with
LibreTranslate's precedence (``service.api.params``); error messages follow LibreTranslate's wording ("Invalid
request: missing q parameter") where this service checks the same thing. Files: ``routes_files``.

Differences a client may notice: ``detectedLanguage`` is restricted to the languages this service
translates from, and errors for overload (429) and deadlines (504) come from the batching queue.
"""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from inference import languages
from service.api.deps import check_api_key, get_engine, run_job
from service.api.params import Upload, api_key_param, read_params, text_param
from service.api.schemas import (
    DetectedLanguage,
    ErrorResponse,
    FrontendLanguage,
    FrontendLanguages,
    FrontendSettings,
    LanguageEntry,
    LibreDetectRequest,
    LibreHealth,
    LibreTranslateRequest,
    LibreTranslateResponse,
    SuggestRequest,
    SuggestResponse,
)
from service.documents import EXTENSIONS
from service.engine import TranslationEngine, TranslationJob, check_unicode
from service.errors import InvalidJob, NotReady

router = APIRouter(tags=["LibreTranslate-compatible"])

_MISSING = object()  # a parameter the request does not carry

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
    """OpenAPI: the body may be JSON or a form, like LibreTranslate's (the route parses it itself); it is optional
    because the same fields may come in the query string instead."""
    inline = schema.model_json_schema()
    return {"requestBody": {"required": False, "content": {
        "application/json": {"schema": inline},
        "application/x-www-form-urlencoded": {"schema": inline},
        "multipart/form-data": {"schema": inline}}}}


def _alternatives(value: Any, limit: int) -> int:
    """LibreTranslate's ``alternatives``: a whole number (a form's string too), at most ``limit``."""
    if value is _MISSING:
        return 0
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidJob("Invalid request: alternatives parameter is not a number")
    if value < 0:
        raise InvalidJob("Invalid request: alternatives parameter must be >= 0")
    if value > limit:
        raise InvalidJob(f"Invalid request: alternatives parameter must be <= {limit}")
    return value


def _texts(value: Any) -> list[str] | str:
    """``q``: a string or a non-empty list of strings (LibreTranslate's 'missing q' for none or an empty list)."""
    if value is _MISSING or value is None or value == []:
        raise InvalidJob("Invalid request: missing q parameter" + (" (q is an empty list)" if value == [] else ""))
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(t, str) for t in value)):
        return value
    if isinstance(value, Upload) or (isinstance(value, list) and any(isinstance(t, Upload) for t in value)):
        raise InvalidJob("Invalid request: q must be text, not a file upload")
    raise InvalidJob("Invalid request: q must be a string or a list of strings")


def _format(value: Any) -> str:
    """LibreTranslate's ``format``: ``text`` when absent or empty, else ``text`` or ``html``."""
    if value is _MISSING or value is None or value == "":
        return "text"
    if not isinstance(value, str):
        raise InvalidJob("Invalid request: format must be text or html")
    if value not in ("text", "html"):
        raise InvalidJob(f"{value[:60]} format is not supported (format must be text or html)")
    return value


@router.post("/translate", response_model=LibreTranslateResponse, response_model_exclude_none=True,
             responses=ERRORS, openapi_extra=_form_or_json_body(LibreTranslateRequest),
             summary="Translate text (LibreTranslate API)")
async def translate(request: Request, response: Response,
                    engine: TranslationEngine = Depends(get_engine)) -> LibreTranslateResponse:
    params = await read_params(request, list_fields=("q",))
    check_api_key(request, api_key_param(params))  # before the fields: no key, nothing learnt about them
    q = _texts(params.get("q", _MISSING))
    source, target = text_param(params, "source"), text_param(params, "target")
    alternatives = _alternatives(params.get("alternatives", _MISSING), engine.settings.max_beam_size - 1)
    text_format = _format(params.get("format", _MISSING))
    single = isinstance(q, str)
    texts = [q] if single else q
    job = TranslationJob(texts, source, target, text_format, n_best=1 + alternatives)
    result = await run_job(request, response, engine, job)
    translated = [t.text for t in result.translations]
    alternative_texts = [[text for text, _ in t.alternatives] for t in result.translations]
    detected = None
    if languages.normalize_code(source) == languages.AUTO:
        detected = [DetectedLanguage(confidence=round(100 * t.detected.confidence, 1), language=t.detected.language)
                    for t in result.translations if t.detected is not None]
    return LibreTranslateResponse(
        translatedText=translated[0] if single else translated,
        alternatives=(alternative_texts[0] if single else alternative_texts) if alternatives else None,
        detectedLanguage=(detected[0] if single else detected) if detected else None)


@router.post("/detect", response_model=list[DetectedLanguage], responses=ERRORS,
             openapi_extra=_form_or_json_body(LibreDetectRequest),
             summary="Detect the language of a text, among the served source languages")
async def detect(request: Request, engine: TranslationEngine = Depends(get_engine)) -> list[DetectedLanguage]:
    params = await read_params(request)
    check_api_key(request, api_key_param(params))
    q = text_param(params, "q")
    if not engine.ready:
        raise NotReady("models are still loading")
    if len(q) > engine.settings.max_text_chars:
        raise InvalidJob(f"Invalid request: q has more than {engine.settings.max_text_chars} characters")
    check_unicode(q, "q")
    return [DetectedLanguage(confidence=round(100 * d.confidence, 1), language=d.language)
            for d in engine.detect(q)]


@router.get("/languages", response_model=list[LanguageEntry], summary="Served languages (LibreTranslate format)")
async def list_languages(engine: TranslationEngine = Depends(get_engine)) -> list[LanguageEntry]:
    if engine.registry is None:
        raise NotReady("models are still loading")
    registry = engine.registry
    codes = sorted(set(registry.source_languages) | set(registry.target_languages))
    return [LanguageEntry(code=code, name=languages.name(code), targets=registry.targets_of(code)) for code in codes]


FRONTEND_TIMEOUT_MS = 500  # LibreTranslate's default --frontend-timeout
AUTO_DETECT = FrontendLanguage(code="auto", name="Auto Detect")


@router.get("/frontend/settings", response_model=FrontendSettings, responses={503: ERRORS[503]},
            summary="Settings for a LibreTranslate web page (LibreTranslate API)")
async def frontend_settings(request: Request, engine: TranslationEngine = Depends(get_engine)) -> FrontendSettings:
    """As LibreTranslate answers with its defaults: the source is ``auto``; the target is the served language
    the browser's ``Accept-Language`` prefers, else the second of the served languages in /languages order."""
    if engine.registry is None:
        raise NotReady("models are still loading")
    registry, settings = engine.registry, engine.settings
    codes = sorted(set(registry.source_languages) | set(registry.target_languages))
    target = _preferred(request.headers.get("accept-language", ""), registry.target_languages) \
        or codes[1 if len(codes) > 1 else 0]
    keys = request.app.state.api_keys is not None
    return FrontendSettings(
        charLimit=settings.max_text_chars, frontendTimeout=FRONTEND_TIMEOUT_MS, apiKeys=keys, keyRequired=keys,
        suggestions=False, filesTranslation=settings.files_translation,
        supportedFilesFormat=list(EXTENSIONS) if settings.files_translation else [],
        language=FrontendLanguages(source=AUTO_DETECT,
                                   target=FrontendLanguage(code=target, name=languages.name(target))))


def _preferred(header: str, served: list[str]) -> str | None:
    """The served code an ``Accept-Language`` header ranks highest (``q`` weights; region subtags ignored)."""
    ranked = []
    for position, item in enumerate(header.split(",")[:32]):
        tag, _, options = item.strip().partition(";")
        weight = 1.0
        for option in options.split(";"):
            name, _, value = option.strip().partition("=")
            if name.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        code = languages.normalize_code(tag) if tag.strip() else ""
        if code in served and weight > 0:
            ranked.append((-weight, position, code))
    return min(ranked)[2] if ranked else None


SUGGESTIONS_OFF = "Suggestions are disabled on this server."


@router.post("/suggest", response_model=SuggestResponse,
             responses={403: {"model": ErrorResponse, "description": "Suggestions are disabled (always, here)"},
                        413: ERRORS[413]},
             openapi_extra=_form_or_json_body(SuggestRequest),
             summary="Submit a better translation (LibreTranslate API; suggestions are off here)")
async def suggest() -> JSONResponse:
    """LibreTranslate with suggestions off (its default) answers 403 before reading the request; so does this
    service, which never stores suggestions."""
    return JSONResponse({"error": SUGGESTIONS_OFF}, status_code=403)


@router.get("/health", response_model=LibreHealth, responses={503: ERRORS[503]},
            summary="LibreTranslate's health check: ok once translations can be served")
async def health(engine: TranslationEngine = Depends(get_engine)) -> LibreHealth:
    """``{"status": "ok"}`` as LibreTranslate answers; 503 while models load or the service stops (LibreTranslate
    loads before it listens, so its ``ok`` always means it can translate). /health/live and /health/ready are
    this service's own probes."""
    if not engine.ready:
        raise NotReady("models are still loading" if engine.status == "starting" else f"not ready: {engine.status}")
    return LibreHealth(status="ok")


@router.get("/spec", include_in_schema=False)
async def spec(request: Request) -> JSONResponse:
    """LibreTranslate serves its API description here; this is the OpenAPI document of /openapi.json."""
    return JSONResponse(request.app.openapi())
