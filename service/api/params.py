"""LibreTranslate's request parameters: the query string, a form body (urlencoded or multipart) or a JSON body.

LibreTranslate (Flask) reads a JSON body when the request is JSON, and otherwise ``request.values``: the query
string first, then the form. Here the same precedence holds, with one widening: the query string also fills the
fields a JSON body lacks (LibreTranslate would say they are missing). So ``POST /translate?q=...&source=de&
target=en`` with an empty body works, as it does with LibreTranslate.

- JSON body (declared ``application/json`` or ``+json``, or any other non-form content type with a non-blank
  body, read leniently as JSON): its fields, then the query string's.
- Form body: the query string's fields, then the form's (``form_first``: the form's first, as LibreTranslate's
  ``/translate_file`` reads ``source`` and ``target`` from the form only).
- No body (or a blank one): the query string.

A name given more than once in a query string or form counts once (its first value, as Flask's
``values.get``), except ``q`` in ``list_fields``, whose values become a list. File parts are read into memory
(the body is already bounded by MT_MAX_BODY_BYTES) and come back as ``Upload``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from service.errors import InvalidJob

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str | None
    data: bytes


async def read_params(request: Request, list_fields: tuple[str, ...] = (), form_first: bool = False
                      ) -> dict[str, Any]:
    """Every parameter of the request, merged by LibreTranslate's precedence (see the module docstring)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    query = await _multi(request.query_params.multi_items(), list_fields)
    if content_type in FORM_TYPES:
        form = await request.form()
        try:
            fields = await _multi(form.multi_items(), list_fields)
        finally:
            await form.close()
        return {**query, **fields} if form_first else {**fields, **query}
    body = await request.body()
    if not body.strip():
        return query
    try:
        data = await request.json()  # declared JSON, or any other content type: read as JSON (lenient)
    except ValueError as error:  # invalid JSON or UTF-8
        raise InvalidJob(f"Invalid request: body is neither valid JSON nor a form ({error})") from error
    except RecursionError as error:
        raise InvalidJob("Invalid request: the JSON body is nested too deeply") from error
    if not isinstance(data, dict):
        raise InvalidJob("Invalid JSON format: the body must be a JSON object")
    return {**query, **data}


async def _multi(items: list[tuple[str, Any]], list_fields: tuple[str, ...]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for key, value in items:
        if isinstance(value, UploadFile):
            value = Upload(value.filename or "", value.content_type, await value.read())
        if key in list_fields:
            merged.setdefault(key, []).append(value)
        elif key not in merged:
            merged[key] = value
    for key in list_fields:
        if key in merged and len(merged[key]) == 1:
            merged[key] = merged[key][0]
    return merged


def text_param(params: dict[str, Any], name: str) -> str:
    """A required string parameter: LibreTranslate's 'missing' message when absent or empty."""
    value = params.get(name)
    if value is None or value == "" or value == []:
        raise InvalidJob(f"Invalid request: missing {name} parameter")
    if isinstance(value, Upload):
        raise InvalidJob(f"Invalid request: {name} must be text, not a file upload")
    if not isinstance(value, str):
        raise InvalidJob(f"Invalid request: {name} must be a string, not {_json_type(value)}")
    return value


def api_key_param(params: dict[str, Any]) -> str | None:
    value = params.get("api_key")
    return value if isinstance(value, str) else None


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)
