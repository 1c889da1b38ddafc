"""The service's one source of configuration: environment variables with the MT_ prefix (or a .env file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service. Each field is read from ``MT_<FIELD NAME>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="MT_", env_file=".env", extra="ignore")

    # Models and runtime
    models_dir: Path = Field(Path("models"), description="Folder holding one sub-folder per model (model.json inside).")
    skip_broken_models: bool = Field(False, description="Log and skip a model whose files are missing or corrupted "
                                                        "instead of refusing to start.")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="onnxruntime execution provider.")
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads per session; 0 = one per core.")
    quantized: Literal["false", "true", "auto"] = Field(
        "false", description="Use the int8 decoder: true (every model must ship one), auto (where shipped) or false. "
                             "int8 makes results depend slightly on batch composition.")
    io_binding: Literal["auto", "on", "off"] = Field(
        "auto", description="Keep the decoder's inputs (encoder output, decoder state) as onnxruntime OrtValues on "
                            "the provider's device between decoder steps and decode through I/O binding: auto = "
                            "where the decoder runs on CUDA.")
    warmup: bool = Field(True, description="Decode a few sentences per model before reporting ready.")

    # Decoding defaults and limits (per-model defaults come from model.json decoding_defaults)
    default_beam_size: int | None = Field(None, ge=1, description="Beam size when a request names none; "
                                                                  "unset = the model card's default.")
    max_beam_size: int = Field(8, ge=1, le=8)
    rerank: bool = Field(True, description="Rerank each beam's n-best with the reverse direction's model where the "
                                           "model card asks for it and that model is served (better translations at "
                                           "about half the sentences/s); false = plain beam search.")
    max_sentence_chars: int = Field(400, ge=20, description="Longer sentences are cut at spaces before translation.")
    cache_size: int = Field(4096, ge=0, description="Sentence translations kept in the in-memory LRU cache "
                                                    "(each with its n-best list); 0 = no cache.")
    cache_max_mb: int = Field(64, ge=1, description="Memory budget of the translation cache in MiB (estimated); "
                                                    "least recently used entries are evicted beyond it.")
    min_confidence: float | None = Field(None, ge=0.0, le=1.0, description=(
        "Native API: withhold translations whose confidence is below this (a request's min_confidence overrides "
        "it); unset = never abstain."))

    # Request limits
    max_text_chars: int = Field(5000, ge=1, description="Characters per text.")
    max_texts: int = Field(64, ge=1, description="Texts per request.")
    max_request_chars: int = Field(50_000, ge=1, description="Characters per request, all texts together.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Request body size.")
    body_timeout_s: float = Field(30.0, gt=0, description="Time a client has to send a whole request body "
                                                          "(slower uploads get 408).")
    max_connections: int = Field(1000, ge=2, description="Cap on open connections (the one asking included) and "
                                                         "requests in progress; at the cap uvicorn answers 503 "
                                                         "at once.")
    request_timeout_s: float = Field(30.0, gt=0, description="Deadline of a request that sets no timeout.")
    min_request_timeout_s: float = Field(0.05, gt=0)
    max_request_timeout_s: float = Field(300.0, gt=0)

    # Batching and backpressure
    scheduler: Literal["continuous", "batch"] = Field(
        "continuous", description="continuous: sentences join and leave the decoder batch at every step, admitted "
                                  "fairly across API keys and requests; batch: the request-level dynamic batcher "
                                  "(one whole search per batch), kept for comparison.")
    max_active_rows: int = Field(128, ge=1, description="continuous: decoder rows (sentences x beam) decoded together.")
    max_active_tokens: int = Field(16384, ge=1, description="continuous: decoder rows x longest active source, in "
                                                            "tokens (bounds the attention's memory and work).")
    max_queue_work: int = Field(200_000, ge=1, description="continuous: waiting work, in source tokens x beam size, "
                                                           "beyond which requests get 429; also the most one request "
                                                           "may carry (400 beyond).")
    bulk_request_sentences: int = Field(16, ge=1, description="continuous: a request of more sentences than this "
                                                              "is bulk (see MT_SHARED_BULK_ROWS).")
    shared_bulk_rows: int = Field(32, ge=1, description="continuous: rows bulk requests may hold while a smaller "
                                                        "request waits or decodes, so that it is not slowed to the "
                                                        "pace of a step over every bulk row; MT_MAX_ACTIVE_ROWS "
                                                        "turns this off.")
    max_batch_sentences: int = Field(32, ge=1, description="batch: sentences per decoder batch.")
    max_batch_tokens: int = Field(4096, ge=1, description="batch: padded source tokens x beam size per decoder batch.")
    max_wait_ms: float = Field(2.0, ge=0, description="batch: how long the oldest queued sentence may wait for "
                                                       "others to join its batch.")
    max_queue_sentences: int = Field(2048, ge=1, description="Sentences one request may carry (400 beyond); batch: "
                                                             "queued sentences beyond which requests get 429.")
    retry_after_s: int = Field(1, ge=1, description="Smallest Retry-After sent with 429 (grows with the queue).")
    shutdown_timeout_s: float = Field(30.0, ge=0, description="How long shutdown waits for queued work to finish.")

    # HTTP server and logging
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    http_parser: Literal["auto", "httptools", "h11"] = Field(
        "auto", description="uvicorn's HTTP/1.1 parser: httptools (C, the default where installed) or h11 (Python).")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="uvicorn's event loop: uvloop (the default where installed) or the standard asyncio one.")
    log_level: str = "INFO"
    log_text: bool = Field(False, description="Log request and translated text (off: only sizes are logged).")
    cors_origins: list[str] = Field(default_factory=list, description='JSON list, e.g. ["*"]; empty = no CORS.')
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Serve /metrics on this port only "
                                                                        "(prometheus_client's server), not on the "
                                                                        "API port; unset = on the API port.")
    metrics_host: str | None = Field(None, description="Address of the metrics port; unset = MT_HOST.")

    # API keys and per-key rate limits (off while no key is configured)
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Keys a client must send (Authorization: Bearer KEY, or LibreTranslate's "
                                          "api_key field), separated by commas or whitespace, or a JSON list.")
    api_keys_file: Path | None = Field(None, description="File with one key per line, optionally followed by that "
                                                         "key's own requests per minute; '#' starts a comment.")
    rate_limit_per_minute: float = Field(0, ge=0, description="Requests per minute per API key; 0 = no limit.")
    key_fingerprint_secret: str | None = Field(None, description="Secret of the keyed hash that names API keys in "
                                                                 "logs (set it to keep names stable across "
                                                                 "restarts and replicas; unset = random per process).")
    auth_failures_per_minute: float = Field(30, ge=0, description="Requests with a missing or wrong API key one "
                                                                  "client address may make per minute (after a "
                                                                  "burst of 10); beyond: 429. 0 = no limit.")
    rate_limit_work_per_minute: float = Field(
        0, ge=0, description="Work per minute per API key, in source tokens x beam size of the sentences it has "
                             "decoded (cache hits are free); 0 = no limit. A request goes through while the key has "
                             "work left, and what it takes beyond that delays the key's next requests.")
    rate_limit_burst: int = Field(10, ge=1, description="Requests a key may send at once before the per-minute "
                                                        "rate applies (token bucket size).")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else text.replace(",", " ").split()
        return value

    @model_validator(mode="after")
    def _check_ranges(self) -> Settings:
        if not self.min_request_timeout_s <= self.request_timeout_s <= self.max_request_timeout_s:
            raise ValueError("need min_request_timeout_s <= request_timeout_s <= max_request_timeout_s")
        if self.default_beam_size is not None and self.default_beam_size > self.max_beam_size:
            raise ValueError("default_beam_size exceeds max_beam_size")
        if self.max_text_chars > self.max_request_chars:
            raise ValueError("max_text_chars exceeds max_request_chars")
        return self

    # File translation (LibreTranslate's /translate_file and /download_file)
    files_translation: bool = Field(True, description="Serve POST /translate_file (false: 403, as LibreTranslate's "
                                                      "--disable-files-translation).")
    files_dir: Path | None = Field(None, description="Folder for translated files; unset = a private folder made "
                                                     "under $TMPDIR when first needed and removed at shutdown.")
    files_ttl_s: float = Field(1800.0, gt=0, description="Seconds a translated file stays downloadable before it "
                                                         "is deleted (LibreTranslate: 30 minutes).")
    max_file_bytes: int = Field(1_000_000, ge=1, description="Size of an uploaded file (413 beyond); the request "
                                                             "body limit MT_MAX_BODY_BYTES applies as well.")
    max_file_chars: int = Field(100_000, ge=1, description="Characters of text in one uploaded file (400 beyond).")
    max_file_unpacked_bytes: int = Field(50_000_000, ge=1, description="Unpacked size of a .docx or .odt file, all "
                                                                       "its members together (413 beyond).")


SECRET_FIELDS = frozenset({"api_keys", "key_fingerprint_secret"})


class SettingsError(ValueError):
    """The MT_ variables are invalid. One line per variable, named; values never appear (they may be secrets)."""


def load_settings(**updates: object) -> Settings:
    """Settings from the environment (``updates`` override), or SettingsError naming each bad variable."""
    try:
        return Settings().model_copy(update=updates)
    except ValidationError as error:
        lines = []
        for problem in error.errors(include_input=False, include_url=False):
            field = str(problem["loc"][0]) if problem["loc"] else ""
            message = problem["msg"].removeprefix("Value error, ")
            if field in SECRET_FIELDS:
                message = "expected keys separated by commas or whitespace, or a JSON list of strings"
            lines.append(f"MT_{field.upper()}: {message}" if field else f"MT_ settings: {message}")
        raise SettingsError("; ".join(lines)) from None
