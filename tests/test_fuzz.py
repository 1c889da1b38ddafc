"""Property-based fuzzing of every operation in the service's own OpenAPI schema (schemathesis).

Valid and invalid requests generated from the schema, sent over real HTTP: no response may be a 5xx, and
every response must be documented (status code, content type, headers) and match its schema. Bounded: a
fixed number of examples per operation, derandomized, so a run takes well under a minute and is repeatable
(for a deeper, random run: FUZZ_EXAMPLES=1000 FUZZ_RANDOM=1 pytest tests/test_fuzz.py).
Left out: ``positive_data_acceptance`` (a schema-valid request may still name a language pair that is not
served: a correct 400), and, on the LibreTranslate routes only, ``negative_data_rejection``: like
LibreTranslate, they coerce values (``"alternatives": "2"``, as every form value is a string), while the
native API is strict and must refuse every value of the wrong type.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance
from service_helpers import metric_value, running_service

from service.api import create_app
from service.config import Settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))  # per operation
LIMITS = {"max_texts": 4, "max_text_chars": 200, "max_request_chars": 400, "max_body_bytes": 8192,
          "max_beam_size": 3, "max_wait_ms": 0, "max_sentence_chars": 100}


@pytest.fixture(scope="module")
def server(served_models_dir):
    with running_service(served_models_dir, **LIMITS) as url:
        yield url


# The schema, made by the app without loading any model (it does not depend on them), so that pytest can
# collect one test per operation; the last test checks that the server under test serves this very schema.
SPEC = create_app(Settings(models_dir=Path("models"), api_keys=[], api_keys_file=None, metrics_port=None)).openapi()
schema = schemathesis.openapi.from_dict(SPEC)


@schema.parametrize()
@settings(max_examples=EXAMPLES, derandomize=os.environ.get("FUZZ_RANDOM") is None, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case, server):
    excluded = [positive_data_acceptance]
    if case.operation.path in ("/translate", "/detect"):
        excluded.append(negative_data_rejection)
    case.call_and_validate(base_url=server, excluded_checks=excluded, timeout=60)


def test_the_fuzzer_reached_every_operation_and_the_server_survived(server):
    """Runs after the fuzzing above (file order): the server is still ready, and it saw each operation."""
    with httpx.Client(base_url=server, timeout=30) as client:
        assert client.get("/health/ready").status_code == 200
        assert client.get("/openapi.json").json() == SPEC
        metrics = client.get("/metrics").text
    for endpoint in ("/translate", "/detect", "/languages", "/v1/translate", "/v1/models", "/health/ready"):
        assert metric_value(metrics, "mt_http_request_duration_seconds_count", {"endpoint": endpoint}) >= 5, endpoint
    assert metric_value(metrics, "mt_rejections_total", {"reason": "internal"}) == 0
