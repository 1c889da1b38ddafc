"""The HTTP contract over real HTTP (uvicorn in a thread, httpx): both APIs, errors, health, metrics, logs."""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading

import httpx
import pytest
from service_helpers import metric_value, running_service, serve_in_thread, settings_for, wait_until

from service.api import app as app_module
from service.api import create_app
from service.registry import ModelLoadError, verify_models

LIMITS = {"max_texts": 5, "max_text_chars": 300, "max_request_chars": 1000, "max_body_bytes": 4096}


@pytest.fixture(scope="module")
def server(served_models_dir):
    with running_service(served_models_dir, **LIMITS) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=60) as http:
        yield http


def libre(client: httpx.Client, **body) -> httpx.Response:
    return client.post("/translate", json=body)


# ---- health and discovery ----------------------------------------------------------------------------------------

def test_live_and_ready(client):
    assert client.get("/health/live").json()["status"] == "alive"
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["models"] == ["de-en", "en-de"]


def test_readiness_is_503_until_models_are_loaded_and_warm(served_models_dir, monkeypatch):
    release = threading.Event()
    original = app_module._load

    def slow_load(engine, checked):
        assert release.wait(60)
        original(engine, checked)

    monkeypatch.setattr(app_module, "_load", slow_load)
    with serve_in_thread(create_app(settings_for(served_models_dir))) as url:
        assert httpx.get(f"{url}/health/live").status_code == 200
        not_ready = httpx.get(f"{url}/health/ready")
        assert not_ready.status_code == 503 and not_ready.json()["status"] == "starting"
        refused = httpx.post(f"{url}/translate", json={"q": "Hallo", "source": "de", "target": "en"})
        assert refused.status_code == 503 and "loading" in refused.json()["error"]
        assert not_ready.headers["Retry-After"] == refused.headers["Retry-After"] == "1"
        release.set()
        wait_until(lambda: httpx.get(f"{url}/health/ready").status_code == 200, "readiness")
        assert httpx.post(f"{url}/translate", json={"q": "Hallo", "source": "de", "target": "en"}).status_code == 200


def test_languages_in_libretranslate_format(client):
    assert client.get("/languages").json() == [{"code": "de", "name": "German", "targets": ["en"]},
                                               {"code": "en", "name": "English", "targets": ["de"]}]


def test_model_cards(client):
    cards = {card["id"]: card for card in client.get("/v1/models").json()["models"]}
    assert set(cards) == {"de-en", "en-de"}
    card = cards["de-en"]
    assert card["source_language"] == "de" and card["target_language"] == "en"
    assert {"architecture", "parity", "vocabulary", "decoding_defaults", "training"} <= set(card)
    assert "sha256" not in card
    assert card["runtime"] == {"decoder": "fp32", "providers": ["CPUExecutionProvider"], "reranked_by": None}


def test_openapi_documents_both_apis_and_form_bodies(client):
    spec = client.get("/openapi.json").json()
    assert {"/translate", "/languages", "/detect", "/v1/translate", "/v1/models", "/health/ready",
            "/metrics"} <= set(spec["paths"])
    content = spec["paths"]["/translate"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-www-form-urlencoded"} <= set(content)
    assert "q" in content["application/x-www-form-urlencoded"]["schema"]["properties"]
    referenced = set(re.findall(r"#/components/schemas/(\w+)", json.dumps(spec)))
    assert referenced <= set(spec["components"]["schemas"])  # no dangling $ref
    assert client.get("/docs").status_code == 200


# ---- LibreTranslate-compatible /translate ------------------------------------------------------------------------

def test_translate_single_text_json_and_form(client):
    as_json = libre(client, q="Ein Hund rennt.", source="de", target="en")
    as_form = client.post("/translate", data={"q": "Ein Hund rennt.", "source": "de", "target": "en"})
    assert as_json.status_code == as_form.status_code == 200
    assert isinstance(as_json.json()["translatedText"], str) and as_json.json()["translatedText"]
    assert as_form.json() == as_json.json()
    assert set(as_json.json()) == {"translatedText"}  # no alternatives or detection unless asked


def test_translate_list_keeps_order_and_length(client):
    texts = ["Ein Hund rennt.", "Eine Frau singt.", "Ein Hund rennt."]
    body = libre(client, q=texts, source="de", target="en").json()
    assert len(body["translatedText"]) == 3
    assert body["translatedText"][0] == body["translatedText"][2]
    singles = [libre(client, q=t, source="de", target="en").json()["translatedText"] for t in texts[:2]]
    assert body["translatedText"][:2] == singles


def test_alternatives(client):
    body = libre(client, q="Ein Mann fährt Fahrrad.", source="de", target="en", alternatives=3).json()
    assert isinstance(body["alternatives"], list) and 1 <= len(body["alternatives"]) <= 3
    assert body["translatedText"] not in body["alternatives"]
    listed = libre(client, q=["Ein Mann.", "Zwei Frauen."], source="de", target="en", alternatives=2).json()
    assert len(listed["alternatives"]) == 2 and all(isinstance(a, list) for a in listed["alternatives"])


def test_auto_source_reports_the_detected_language(client):
    body = libre(client, q="Ein Mann sitzt auf einer Bank im Park.", source="auto", target="en").json()
    assert body["detectedLanguage"]["language"] == "de"
    assert 0 <= body["detectedLanguage"]["confidence"] <= 100
    listed = libre(client, q=["Ein Hund.", "Zwei Katzen."], source="auto", target="en").json()
    assert [d["language"] for d in listed["detectedLanguage"]] == ["de", "de"]


def test_auto_source_returns_text_already_in_the_target_language_unchanged(client):
    text = "A man is sitting on a bench in the park."
    body = libre(client, q=[text, "Ein Mann sitzt auf einer Bank im Park."], source="auto", target="en").json()
    assert body["translatedText"][0] == text and body["translatedText"][1] != body["translatedText"][0]
    assert [d["language"] for d in body["detectedLanguage"]] == ["en", "de"]


def test_detect_ranks_the_served_source_languages(client):
    english = client.post("/detect", data={"q": "A man is sitting on a bench in the park."}).json()
    german = client.post("/detect", json={"q": "Ein Mann sitzt auf einer Bank im Park."}).json()
    assert english[0]["language"] == "en" and german[0]["language"] == "de"
    assert {d["language"] for d in english} == {"de", "en"}
    assert english[0]["confidence"] > english[1]["confidence"]


def test_whitespace_and_paragraphs_survive(client):
    text = "  Ein Hund rennt.  Eine Frau singt.\n\nZwei Kinder spielen.\n"
    out = libre(client, q=text, source="de", target="en").json()["translatedText"]
    assert out.startswith("  ") and not out.startswith("   ")
    assert out.endswith("\n") and not out.endswith("\n\n")
    assert out.count("\n\n") == 1 and out.count("\n") == 3
    first_paragraph = out.split("\n\n")[0]
    assert "  " in first_paragraph.strip()  # the double space between the two sentences


def test_empty_and_blank_texts_come_back_unchanged_without_a_model_call(client):
    before = metric_value(client.get("/metrics").text, "mt_sentences_translated_total", {"model": "de-en"})
    body = libre(client, q=["", "   ", "\n\n", "42", "..."], source="de", target="en").json()
    assert body["translatedText"] == ["", "   ", "\n\n", "42", "..."]
    after = metric_value(client.get("/metrics").text, "mt_sentences_translated_total", {"model": "de-en"})
    assert after == before


def test_html_keeps_markup_translates_text_and_stays_escaped(client):
    markup = ('<p class="intro">Ein Hund rennt. <b>Eine Katze schläft.</b></p>'
              '<script>var s = "<b>Hund</b>";</script><code>Hund</code><p>&lt;script&gt;alert(1)&lt;/script&gt;</p>')
    out = libre(client, q=markup, source="de", target="en", format="html").json()["translatedText"]
    assert out.startswith('<p class="intro">') and "<b>" in out and "</b></p>" in out
    assert '<script>var s = "<b>Hund</b>";</script>' in out  # script source is not translated
    assert "<code>Hund</code>" in out
    assert "Ein Hund rennt." not in out  # the text nodes were translated
    assert out.count("<script>") == 1  # the escaped one in the input stayed text
    assert out.endswith("</p>")


# ---- errors ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, status, words", [
    ({"source": "de", "target": "en"}, 400, "missing q"),
    ({"q": "Hallo", "target": "en"}, 400, "missing source"),
    ({"q": "Hallo", "source": "xx", "target": "en"}, 400, "'xx'"),
    ({"q": "Hallo", "source": "de", "target": "fr"}, 400, "'fr'"),
    ({"q": "Hallo", "source": "de", "target": "de"}, 400, "both de"),
    ({"q": "Hallo", "source": "en", "target": "en"}, 400, "both en"),
    ({"q": "Hallo", "source": "de", "target": "auto"}, 400, "target"),
    ({"q": "Hallo", "source": "de", "target": "en", "format": "pdf"}, 400, "format"),
    ({"q": "Hallo", "source": "de", "target": "en", "alternatives": 8}, 400, "alternatives"),
    ({"q": ["a"] * 6, "source": "de", "target": "en"}, 400, "too many texts"),
    ({"q": "Hallo " * 60, "source": "de", "target": "en"}, 400, "characters"),
    ({"q": [], "source": "de", "target": "en"}, 400, "empty"),
])
def test_libretranslate_errors(client, body, status, words):
    response = libre(client, **body)
    assert response.status_code == status
    assert set(response.json()) == {"error"} and words in response.json()["error"]


@pytest.mark.parametrize("body, words", [
    ({"texts": ["Hallo"], "source": "de", "target": "en", "beam_size": 9}, "beam_size"),
    ({"texts": ["Hallo"], "source": "de", "target": "en", "beam_size": 0}, "beam_size"),
    ({"texts": ["Hallo"], "source": "de", "target": "en", "beam_size": 2, "n_best": 3}, "n_best"),
    ({"texts": ["Hallo"], "source": "de", "target": "en", "timeout": 0}, "timeout"),
    ({"texts": ["Hallo"], "source": "de", "target": "en", "beam": 2}, "beam"),  # unknown field: a typo
    ({"texts": "Hallo", "source": "de", "target": "en"}, "texts"),
    ({"texts": ["Hallo"], "source": "de"}, "target"),
])
def test_native_errors(client, body, words):
    response = client.post("/v1/translate", json=body)
    assert response.status_code == 400
    assert words in response.json()["error"]


def test_body_limits_and_malformed_bodies(client):
    too_big = client.post("/translate", content=b"q=" + b"a" * 5000 + b"&source=de&target=en",
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert too_big.status_code == 413 and "error" in too_big.json()
    broken = client.post("/translate", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "error" in broken.json()
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and "error" in missing.json()


# ---- native /v1/translate ----------------------------------------------------------------------------------------

def test_native_contract_with_scores_alternatives_and_attention(client):
    response = client.post("/v1/translate", json={
        "texts": ["Ein Mann fährt Fahrrad. Zwei Hunde spielen.", ""], "source": "de", "target": "en",
        "beam_size": 3, "n_best": 3, "return_scores": True, "return_attention": True})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "de-en"
    assert set(body["timing"]) == {"queue_ms", "inference_ms"} and body["timing"]["inference_ms"] > 0
    first, empty = body["translations"]
    assert first["source_language"] == "de" and first["model"] == "de-en"
    assert len(first["sentences"]) == 2 and len(first["attention"]) == 2
    assert first["score"] == pytest.approx(sum(s["score"] for s in first["sentences"]) / 2)
    scores = [first["score"]] + [a["score"] for a in first["alternatives"]]
    assert scores == sorted(scores, reverse=True) and first["text"] not in [a["text"] for a in first["alternatives"]]
    assert first["text"] == " ".join(s["text"] for s in first["sentences"])
    for alignment, sentence in zip(first["attention"], first["sentences"]):
        assert alignment["source"] == sentence["source"] and alignment["text"] == sentence["text"]
        assert alignment["source_tokens"][-1] == "</s>"
        weights = alignment["weights"]
        assert len(weights) == len(alignment["target_tokens"])
        assert all(len(row) == len(alignment["source_tokens"]) for row in weights)
        assert all(abs(sum(row) - 1) < 2e-3 for row in weights)
    assert empty == {"text": "", "model": "de-en", "source_language": "de", "sentences": [], "attention": [],
                     "alternatives": []}


def test_native_defaults_are_lean(client):
    body = client.post("/v1/translate", json={"texts": ["Ein Hund."], "source": "de", "target": "en"}).json()
    assert set(body["translations"][0]) == {"text", "model", "source_language"}


def test_native_auto_detection_per_text(client):
    body = client.post("/v1/translate", json={"texts": ["Ein Hund rennt."], "target": "en"}).json()
    assert body["translations"][0]["detected_language"]["language"] == "de"


def test_request_id_and_timing_headers(client):
    given = client.post("/translate", json={"q": "Ein Hund.", "source": "de", "target": "en"},
                        headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    assert float(given.headers["X-Queue-Time-Ms"]) >= 0 and float(given.headers["X-Inference-Time-Ms"]) > 0
    generated = client.get("/health/live", headers={"X-Request-ID": "bad id with spaces"}).headers["X-Request-ID"]
    assert len(generated) == 32 and generated != "bad id with spaces"
    assert client.get("/nowhere").headers["X-Request-ID"]


def test_metrics_cover_requests_batches_and_models(client):
    libre(client, q="Ein Hund rennt schnell.", source="de", target="en")
    libre(client, q="Hallo", source="xx", target="en")
    text = client.get("/metrics").text
    assert metric_value(text, "mt_http_requests_total", {"endpoint": "/translate", "status": "200"}) >= 1
    assert metric_value(text, "mt_http_requests_total", {"endpoint": "/translate", "status": "400"}) >= 1
    assert metric_value(text, "mt_http_request_duration_seconds_count", {"endpoint": "/translate"}) >= 2
    assert metric_value(text, "mt_rejections_total", {"reason": "invalid"}) >= 1
    assert metric_value(text, "mt_queue_wait_seconds_count") >= 1
    for name in ("mt_batch_inference_seconds_count", "mt_batch_size_sentences_count", "mt_batch_padding_ratio_count",
                 "mt_sentences_translated_total", "mt_generated_tokens_total"):
        assert metric_value(text, name, {"model": "de-en"}) >= 1, name
    assert metric_value(text, "mt_model_info", {"model": "en-de", "source": "en", "target": "de",
                                                "decoder": "fp32"}) == 1
    assert metric_value(text, "mt_ready") == 1
    assert "mt_queue_depth_sentences" in text and "mt_http_requests_in_flight" in text
    assert "Ein Hund" not in text and "/nowhere" not in text  # no text, no raw paths as labels


def test_request_logs_are_structured_and_omit_text(client, caplog):
    with caplog.at_level(logging.INFO, logger="service.access"):
        client.post("/translate", json={"q": "Geheimer Satz.", "source": "de", "target": "en"},
                    headers={"X-Request-ID": "log-test-1"})
        wait_until(lambda: any(getattr(r, "request_id", None) == "log-test-1" for r in caplog.records), "the log")
    record = next(r for r in caplog.records if getattr(r, "request_id", None) == "log-test-1")
    assert record.status == 200 and record.path == "/translate" and record.sentences == 1
    from service.logs import JsonFormatter

    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "log-test-1" and line["models"] == ["de-en"]
    assert "Geheimer" not in json.dumps(line)


# ---- broken model directories ------------------------------------------------------------------------------------

@pytest.fixture
def models_with_a_broken_one(served_models_dir, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(served_models_dir / "de-en", root / "de-en")
    shutil.copytree(served_models_dir / "en-de", root / "en-de")
    decoder = root / "en-de" / "decoder.onnx"
    decoder.write_bytes(decoder.read_bytes()[:-10] + b"0123456789")
    return root


def test_a_corrupted_model_stops_start_up_naming_the_file(models_with_a_broken_one):
    with pytest.raises(ModelLoadError, match=r"en-de.*decoder\.onnx is corrupted"):
        verify_models(settings_for(models_with_a_broken_one))
    (models_with_a_broken_one / "en-de" / "decoder.onnx").unlink()
    with pytest.raises(ModelLoadError, match=r"decoder\.onnx is missing"):
        verify_models(settings_for(models_with_a_broken_one))


def test_skip_broken_models_serves_the_others(models_with_a_broken_one):
    app = create_app(settings_for(models_with_a_broken_one, skip_broken_models=True))
    with serve_in_thread(app) as url:
        wait_until(lambda: httpx.get(f"{url}/health/ready").status_code == 200, "readiness")
        ready = httpx.get(f"{url}/health/ready").json()
        assert ready["models"] == ["de-en"] and "decoder.onnx is corrupted" in ready["broken_models"]["en-de"]
        assert httpx.post(f"{url}/translate", json={"q": "Hallo.", "source": "de", "target": "en"}).status_code == 200
        refused = httpx.post(f"{url}/translate", json={"q": "Hello.", "source": "en", "target": "de"})
        assert refused.status_code == 400
    assert app.state.engine.status == "stopping"  # the app made the engine, so the app stopped it
