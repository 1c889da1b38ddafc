"""Confidence and abstention over real HTTP, with the tiny model and a confidence section written into its card."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest
from service_helpers import running_service

from inference.confidence import SIGNALS, ConfidenceModel

GERMAN = "Ein Mann fährt Fahrrad."
FRENCH = "Deux chiens jouent dans la neige devant une maison."


@pytest.fixture(scope="module")
def calibrated_models(served_models_dir, tmp_path_factory):
    """de-en with a confidence that rises with the output's mean log-prob and with German-looking input;
    en-de left uncalibrated."""
    root = tmp_path_factory.mktemp("calibrated") / "models"
    shutil.copytree(served_models_dir, root)
    weights = np.zeros(len(SIGNALS))
    weights[SIGNALS.index("mean_log_prob")] = 1.0
    weights[SIGNALS.index("source_language_log_prob")] = 3.0
    model = ConfidenceModel(SIGNALS, np.zeros(len(SIGNALS)), np.ones(len(SIGNALS)), weights, 2.0)
    card_path = root / "de-en" / "model.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["confidence"] = {"good_chrf": 50.0, "model": model.to_card()}
    card_path.write_text(json.dumps(card, indent=2), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def url(calibrated_models):
    with running_service(calibrated_models) as base:
        yield base


def translate(url: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/translate", json={"source": "de", "target": "en", **body}, timeout=60)


def test_confidence_is_given_per_text_and_per_sentence_only_when_asked(url):
    plain = translate(url, texts=[GERMAN]).json()["translations"][0]
    assert "confidence" not in plain and "abstained" not in plain
    item = translate(url, texts=[f"{GERMAN} {FRENCH}"], return_confidence=True).json()["translations"][0]
    sentences = item["sentences"]
    assert len(sentences) == 2 and all(0 <= s["confidence"] <= 1 and "score" not in s for s in sentences)
    assert item["confidence"] == min(s["confidence"] for s in sentences)  # a text is as good as its worst sentence
    assert sentences[1]["confidence"] < sentences[0]["confidence"]  # French sent to a German model


def test_below_min_confidence_the_text_is_withheld_with_a_null_text(url):
    scores = translate(url, texts=[GERMAN, FRENCH], return_confidence=True).json()["translations"]
    threshold = (scores[0]["confidence"] + scores[1]["confidence"]) / 2
    body = translate(url, texts=[GERMAN, FRENCH], min_confidence=threshold, n_best=2, beam_size=2,
                     return_scores=True, return_attention=True).json()
    kept, withheld = body["translations"]
    assert kept["abstained"] is False and kept["text"] == scores[0]["text"] and "attention" in kept
    assert withheld == {"text": None, "model": "de-en", "source_language": "de", "abstained": True,
                        "confidence": scores[1]["confidence"],
                        "sentences": [{"source": FRENCH, "text": None, "score": withheld["sentences"][0]["score"]}]}


def test_min_confidence_zero_never_abstains_and_bad_values_are_refused(url):
    item = translate(url, texts=[FRENCH], min_confidence=0).json()["translations"][0]
    assert item["abstained"] is False and item["text"]
    for bad in (1.5, -0.1, "0.5", True):
        response = translate(url, texts=[GERMAN], min_confidence=bad)
        assert response.status_code == 400, bad
        assert "min_confidence" in response.text


def test_an_uncalibrated_model_is_a_clear_400(url):
    response = httpx.post(f"{url}/v1/translate", json={"texts": ["A man rides a bike."], "source": "en",
                                                       "target": "de", "return_confidence": True}, timeout=60)
    assert response.status_code == 400
    assert "en-de has no confidence calibration" in response.json()["error"]


def test_the_service_default_applies_and_a_request_overrides_it(calibrated_models):
    with running_service(calibrated_models, min_confidence=0.999) as base:
        assert translate(base, texts=[FRENCH]).json()["translations"][0]["text"] is None
        assert translate(base, texts=[FRENCH], min_confidence=0.0).json()["translations"][0]["text"]
        libre = httpx.post(f"{base}/translate", json={"q": FRENCH, "source": "de", "target": "en"}, timeout=60)
        assert libre.status_code == 200 and libre.json()["translatedText"]  # LibreTranslate's API never abstains


def test_a_broken_confidence_section_makes_the_model_broken(calibrated_models, tmp_path):
    from service.registry import verify_models
    from service_helpers import settings_for

    root = tmp_path / "models"
    shutil.copytree(calibrated_models, root)
    card_path = root / "de-en" / "model.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["confidence"]["model"]["weights"] = [1.0]
    card_path.write_text(json.dumps(card), encoding="utf-8")
    verified, broken = verify_models(settings_for(root, skip_broken_models=True))
    assert [v.path.name for v in verified] == ["en-de"]
    assert "confidence.model" in broken["de-en"]


def test_a_sentence_cached_without_confidence_gets_it_when_a_later_request_asks(calibrated_models):
    """Confidence is computed only for requests that want it; a cache entry stored by one that did not is
    assessed when it is hit by one that does, to the same value an uncached request gets."""
    with running_service(calibrated_models) as uncached:
        expected = translate(uncached, texts=[GERMAN], return_confidence=True).json()["translations"][0]
    with running_service(calibrated_models, cache_size=100) as cached:
        plain = translate(cached, texts=[GERMAN]).json()["translations"][0]
        assert "confidence" not in plain
        hit = translate(cached, texts=[GERMAN], return_confidence=True).json()["translations"][0]
        metrics = httpx.get(f"{cached}/metrics").text
    assert "mt_cache_hits_total{model=\"de-en\"} 1.0" in metrics
    assert hit["confidence"] == expected["confidence"] is not None
