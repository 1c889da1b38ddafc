"""LibreTranslate's file translation: POST /translate_file (multipart ``file``, ``source``, ``target``,
``api_key``) answers ``{"translatedFileUrl": ".../download_file/<name>"}``; GET /download_file/<name> serves the
file until it expires (MT_FILES_TTL_S).

Formats and how their structure is kept: ``service.documents``; how a file's texts go through the engine:
``service.filetranslation``; where files wait: ``service.filestore``.
"""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from service import documents
from service.api.deps import cancel_on_disconnect, check_api_key, flow_of, get_engine
from service.api.params import Upload, api_key_param, read_params, text_param
from service.api.routes_libre import ERRORS
from service.api.schemas import ErrorResponse, TranslateFileResponse
from service.documents import DocumentError, DocumentTooLarge
from service.engine import TranslationEngine
from service.errors import InvalidJob, NotReady
from service.filestore import FileStore, InvalidName, download_name
from service.filetranslation import Outcome, has_letters, translate_units

router = APIRouter(tags=["LibreTranslate-compatible"])

FILES_OFF = "Files translation are disabled on this server."  # LibreTranslate's words
DETECTION_SAMPLE_CHARS = 5000

_UPLOAD_SCHEMA = {"type": "object", "required": ["file", "source", "target"], "properties": {
    "file": {"type": "string", "format": "binary",
             "description": f"The file: {', '.join(documents.EXTENSIONS)} (by its name's extension)."},
    "source": {"type": "string", "description": "Source language code, or `auto` to detect it.", "example": "de"},
    "target": {"type": "string", "description": "Target language code.", "example": "en"},
    "api_key": {"type": "string", "description": "API key, when the service requires keys (or send "
                                                 "`Authorization: Bearer <key>`)."}}}


def get_files(request: Request) -> FileStore:
    return request.app.state.files


@router.post("/translate_file", response_model=TranslateFileResponse,
             responses={**ERRORS, 403: {"model": ErrorResponse, "description": "Invalid API key, or file translation "
                                                                               "disabled (MT_FILES_TRANSLATION)"},
                        413: {"model": ErrorResponse, "description": "File over MT_MAX_FILE_BYTES or "
                                                                     "MT_MAX_FILE_UNPACKED_BYTES, or body over "
                                                                     "MT_MAX_BODY_BYTES"}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": _UPLOAD_SCHEMA}}}},
             summary="Translate a file (LibreTranslate API): .txt, .html, .srt, .docx, .odt")
async def translate_file(request: Request, response: Response, engine: TranslationEngine = Depends(get_engine),
                         files: FileStore = Depends(get_files)) -> TranslateFileResponse:
    params = await read_params(request, form_first=True)  # LibreTranslate reads source and target from the form
    check_api_key(request, api_key_param(params))
    settings = engine.settings
    if not settings.files_translation:
        raise HTTPException(403, FILES_OFF)
    upload = params.get("file")
    if upload is None:
        raise InvalidJob("Invalid request: missing file parameter")
    if not isinstance(upload, Upload):
        raise InvalidJob("Invalid request: file must be a file upload (multipart/form-data with a file name)")
    source, target = text_param(params, "source"), text_param(params, "target")
    if upload.filename == "":
        raise InvalidJob("Invalid request: empty file")
    extension = PurePosixPath(upload.filename.replace("\\", "/")).suffix.lower()
    if extension not in documents.EXTENSIONS:
        raise InvalidJob(f"Invalid request: file format not supported (supported: {', '.join(documents.EXTENSIONS)})")
    if len(upload.data) > settings.max_file_bytes:
        raise HTTPException(413, f"Invalid request: the file has {len(upload.data)} bytes "
                                 f"(at most {settings.max_file_bytes})")
    if not engine.ready:
        raise NotReady("models are still loading")
    target_code = engine.resolve_target(target)
    source_code = engine.resolve_source(source, target_code)  # None: detect
    log: dict[str, Any] = request.state.log
    log.update(source=source, target=target, file_format=extension, file_bytes=len(upload.data))

    async def work() -> bytes:
        try:
            document = await asyncio.to_thread(documents.open_document, upload.data, extension,
                                               settings.max_file_unpacked_bytes)
        except DocumentTooLarge as error:
            raise HTTPException(413, f"Invalid request: {error}") from None
        except DocumentError as error:
            raise InvalidJob(f"Invalid request: {error}") from None
        chars = sum(len(text) for text in document.texts if has_letters(text))
        log.update(texts=len(document.texts), chars=chars)
        if chars > settings.max_file_chars:
            raise InvalidJob(f"Invalid request: the file has {chars} characters of text "
                             f"(at most {settings.max_file_chars})")
        language = source_code or _detect(engine, document.texts, target_code)
        log["source_language"] = language
        if language == target_code:  # already in the target language: returned as it is, as /translate does
            outcome = Outcome(list(document.texts))
        else:
            outcome = await translate_units(engine, document.texts, language, target_code, flow_of(request),
                                            getattr(request.state, "charge_work", None))
        log.update(jobs=outcome.jobs, sentences=outcome.sentences, models=sorted(outcome.models),
                   queue_ms=round(outcome.queue_ms, 2), inference_ms=round(outcome.inference_ms, 2))
        response.headers["X-Queue-Time-Ms"] = f"{outcome.queue_ms:.2f}"
        response.headers["X-Inference-Time-Ms"] = f"{outcome.inference_ms:.2f}"
        return await asyncio.to_thread(document.render, outcome.translations)

    translated = await cancel_on_disconnect(request, work())
    name = download_name(upload.filename, target_code, extension)
    stored = await asyncio.to_thread(files.save, translated, name)
    return TranslateFileResponse(translatedFileUrl=str(request.url_for("download_file", filename=stored)))


def _detect(engine: TranslationEngine, texts: list[str], target: str) -> str:
    """The file's language, detected once from its first characters among the languages with a model into the
    target, and the target itself (as /translate's auto detection)."""
    assert engine.registry is not None
    sample = " ".join(texts)[:DETECTION_SAMPLE_CHARS]
    return engine.detect(sample, engine.registry.sources_of(target) + [target])[0].language


_DOWNLOAD_TYPES = {media_type: {"schema": {"type": "string", "format": "binary"}}
                   for media_type in documents.MEDIA_TYPES.values()}


@router.get("/download_file/{filename}", response_class=Response,
            responses={200: {"content": _DOWNLOAD_TYPES, "description": "The translated file, as an attachment"},
                       400: {"model": ErrorResponse, "description": "Not a name /translate_file makes (or file "
                                                                    "translation disabled)"},
                       404: {"model": ErrorResponse, "description": "No such file, or it expired"}},
            summary="Download a translated file (LibreTranslate API)")
async def download_file(filename: str, engine: TranslationEngine = Depends(get_engine),
                        files: FileStore = Depends(get_files)) -> Response:
    if not engine.settings.files_translation:
        raise HTTPException(400, FILES_OFF)
    try:
        found = await asyncio.to_thread(files.read, filename)
    except InvalidName:
        raise HTTPException(400, "Invalid filename") from None
    if found is None:
        raise HTTPException(404, f"File not found: it expired (files are kept {engine.settings.files_ttl_s:g} s) "
                                 "or never existed")
    content, name = found
    media_type = documents.MEDIA_TYPES[PurePosixPath(name).suffix]
    return Response(content, media_type=media_type, headers={
        "Content-Disposition": f'attachment; filename="{name}"',
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",  # an uploaded page never runs scripts on this origin
        "Cache-Control": "no-store"})

