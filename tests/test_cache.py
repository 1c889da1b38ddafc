"""The translation cache: the LRU map on its own, then through the engine over real HTTP with the tiny model."""

from __future__ import annotations

import copy
import json
import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import numpy as np
import pytest
from service_helpers import gate, metric_value, serve_in_thread, started_engine, ungate, wait_until

from inference.search import SearchOptions
from inference.translator import Translation
from service.api import create_app
from service.cache import CacheKey, TranslationCache, cache_key, entry_bytes
from service.config import Settings, SettingsError, load_settings
from service.metrics import Metrics

SENTENCES = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau singt.",
             "Ein Junge springt in einen See.", "Drei Männer stehen vor einem Gebäude.", "Leute sitzen im Park."]


def nbest(text: str = "A man.", attention: bool = True) -> list[Translation]:
    weights = np.full((3, 2), 0.5, dtype=np.float32) if attention else None
    return [Translation(text, -0.5, ["▁Ein", "</s>"], ["▁A", "▁man", "</s>"], weights)]


def key(sentence_ids: list[int], model: str = "de-en", **options) -> CacheKey:
    class Model:
        id = model
        fingerprint = "f" * 64

    return cache_key(Model(), sentence_ids, SearchOptions(**options))


# ---- the LRU map ---------------------------------------------------------------------------------------------------

def test_a_stored_entry_comes_back_equal_and_counts_hits_and_misses():
    metrics = Metrics()
    cache = TranslationCache(4, metrics=metrics)
    assert cache.get(key([5, 2])) is None
    cache.put(key([5, 2]), nbest())
    got = cache.get(key([5, 2]))
    assert got[0].text == "A man." and got[0].target_tokens == ["▁A", "▁man", "</s>"]
    assert np.array_equal(got[0].attention, nbest()[0].attention)
    text = metrics.render().decode()
    assert metric_value(text, "mt_cache_hits_total", {"model": "de-en"}) == 1
    assert metric_value(text, "mt_cache_misses_total", {"model": "de-en"}) == 1
    assert metric_value(text, "mt_cache_entries") == 1


def test_least_recently_used_entry_is_evicted_at_capacity():
    cache = TranslationCache(2)
    cache.put(key([1]), nbest("one"))
    cache.put(key([2]), nbest("two"))
    assert cache.get(key([1]))[0].text == "one"  # 1 is now more recent than 2
    cache.put(key([3]), nbest("three"))
    assert len(cache) == 2
    assert cache.get(key([2])) is None
    assert cache.get(key([1]))[0].text == "one" and cache.get(key([3]))[0].text == "three"


def test_memory_budget_evicts_and_refuses_what_cannot_fit():
    small, large = nbest("small"), nbest("large")
    large[0].attention = np.full((100, 100), 0.01, dtype=np.float32)  # 40 kB
    small_bytes, large_bytes = entry_bytes(copy.deepcopy(small)), entry_bytes(copy.deepcopy(large))  # as stored
    assert large_bytes > small_bytes + 39_000
    metrics = Metrics()
    cache = TranslationCache(100, max_bytes=large_bytes + small_bytes + small_bytes // 2, metrics=metrics)
    cache.put(key([1]), small)
    cache.put(key([2]), small)
    cache.put(key([3]), small)
    assert len(cache) == 3 and cache.bytes == 3 * small_bytes
    cache.put(key([4]), large)  # room for it and one small entry: the two least recently used go
    assert cache.get(key([1])) is None and cache.get(key([2])) is None
    assert cache.get(key([3]))[0].text == "small" and cache.get(key([4]))[0].text == "large"
    assert cache.bytes == large_bytes + small_bytes <= cache.max_bytes
    assert metric_value(metrics.render().decode(), "mt_cache_bytes") == cache.bytes
    cache.put(key([3]), small)  # replacing an entry does not count it twice
    assert cache.bytes == large_bytes + small_bytes
    tiny = TranslationCache(100, max_bytes=2 * small_bytes)
    tiny.put(key([5]), large)  # larger than the whole budget: not stored, nothing evicted for it
    assert len(tiny) == 0 and tiny.bytes == 0


def test_size_zero_stores_nothing():
    metrics = Metrics()
    cache = TranslationCache(0, metrics=metrics)
    cache.put(key([1]), nbest())
    assert not cache.enabled and len(cache) == 0 and cache.get(key([1])) is None
    assert metric_value(metrics.render().decode(), "mt_cache_misses_total", {"model": "de-en"}) == 0  # not looked up
    with pytest.raises(ValueError):
        TranslationCache(-1)


def test_every_option_model_and_sentence_is_part_of_the_key():
    base = key([7, 8, 2], beam_size=4, n_best=2)
    variants = [key([7, 8, 2], beam_size=5, n_best=2), key([7, 8, 2], beam_size=4, n_best=1),
                key([7, 8, 2], beam_size=4, n_best=2, length_penalty=0.6),
                key([7, 8, 2], beam_size=4, n_best=2, max_length_ratio=1.5),
                key([7, 8, 2], beam_size=4, n_best=2, max_length_offset=3),
                key([7, 8, 2], beam_size=4, n_best=2, max_length_cap=64),
                key([7, 8, 2], beam_size=4, n_best=2, return_attention=True),
                key([7, 8, 2], model="en-de", beam_size=4, n_best=2), key([7, 9, 2], beam_size=4, n_best=2),
                replace(base, fingerprint="0" * 64)]
    assert len({base, *variants}) == len(variants) + 1
    assert key([7, 8, 2], beam_size=4, n_best=2) == base


def test_callers_cannot_change_each_others_entries():
    cache = TranslationCache(4)
    original = nbest()
    cache.put(key([1]), original)
    original[0].text = "changed after put"
    original[0].attention[:] = 0
    first = cache.get(key([1]))
    first[0].text = "changed by a reader"
    first[0].target_tokens.append("x")
    first[0].attention[:] = 9
    first.clear()
    second = cache.get(key([1]))
    assert second[0].text == "A man." and second[0].target_tokens == ["▁A", "▁man", "</s>"]
    assert np.all(second[0].attention == 0.5)


def test_concurrent_readers_and_writers_keep_the_map_consistent():
    """Many threads over a small cache (constant evictions), with thread switches forced as often as possible."""
    cache = TranslationCache(8, metrics=Metrics())
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        try:
            start.wait()
            for i in range(3000):
                sentence = (i * 7 + worker) % 24
                got = cache.get(key([sentence]))
                if got is not None:
                    assert got[0].text == f"t{sentence}"
                else:
                    cache.put(key([sentence]), nbest(f"t{sentence}"))
                assert len(cache) <= 8
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(cache) == 8


def test_cache_size_setting_default_and_validation(monkeypatch):
    assert Settings.model_fields["cache_size"].default == 4096
    monkeypatch.setenv("MT_CACHE_SIZE", "-1")
    with pytest.raises(SettingsError, match="MT_CACHE_SIZE: Input should be greater than or equal to 0"):
        load_settings()
    monkeypatch.setenv("MT_CACHE_SIZE", "many")
    with pytest.raises(SettingsError, match="MT_CACHE_SIZE"):
        load_settings()
    monkeypatch.setenv("MT_CACHE_SIZE", "0")
    assert load_settings().cache_size == 0
    monkeypatch.setenv("MT_CACHE_MAX_MB", "0")
    with pytest.raises(SettingsError, match="MT_CACHE_MAX_MB: Input should be greater than or equal to 1"):
        load_settings()


# ---- through the engine, over HTTP ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def service(served_models_dir):
    """(engine, client) of a served tiny model with a 64-sentence cache."""
    with started_engine(served_models_dir, cache_size=64) as engine, \
            serve_in_thread(create_app(engine.settings, engine)) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        yield engine, client


def native(client: httpx.Client, texts: list[str], **options) -> dict:
    body = {"texts": texts, "source": "de", "target": "en", **options}
    response = client.post("/v1/translate", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def counters(client: httpx.Client, model: str = "de-en") -> dict[str, float]:
    text = client.get("/metrics").text
    return {"hits": metric_value(text, "mt_cache_hits_total", {"model": model}),
            "misses": metric_value(text, "mt_cache_misses_total", {"model": model}),
            "steps": metric_value(text, "mt_decoder_steps_total", {"model": model}),
            "decoded": metric_value(text, "mt_sentences_translated_total", {"model": model})}


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float | bool]:
    change: dict[str, float | bool] = {name: after[name] - before[name] for name in before}
    change["decoding"] = change.pop("steps") > 0  # the decoder ran
    return change


def engine_key(engine, sentence: str, model_id: str = "de-en", **options) -> CacheKey:
    model = engine.registry.models[model_id]
    options.setdefault("return_attention", False)
    return cache_key(model, model.translator.encode(sentence), model.search_options(**options))


def test_a_repeated_sentence_is_answered_from_the_cache_exactly_as_decoded(service):
    engine, client = service
    options = {"beam_size": 3, "n_best": 3, "return_scores": True, "return_attention": True}
    text = "Ein Mann fährt Fahrrad. Zwei Hunde spielen im Schnee."
    before = counters(client)
    miss = native(client, [text], **options)
    after_miss = counters(client)
    hit = native(client, [text], **options)
    after_hit = counters(client)
    assert miss["translations"] == hit["translations"]  # text, scores, alternatives, attention: all equal
    assert moved(before, after_miss) == {"hits": 0, "misses": 2, "decoding": True, "decoded": 2}
    assert moved(after_miss, after_hit) == {"hits": 2, "misses": 0, "decoding": False, "decoded": 0}
    assert hit["timing"] == {"queue_ms": 0.0, "inference_ms": 0.0}  # nothing was queued or decoded
    # The sentence alone (another text) hits as well: entries are per sentence.
    again = counters(client)
    alone = native(client, ["Zwei Hunde spielen im Schnee."], **options)
    assert moved(again, counters(client))["hits"] == 1
    assert alone["translations"][0]["attention"] == miss["translations"][0]["attention"][1:]


def test_cache_hits_never_reach_the_batcher(service):
    engine, client = service
    native(client, ["Ein Junge springt in einen See."])
    held = gate(engine)  # every decoder batch now waits until the gate opens
    try:
        before = counters(client)
        answer = native(client, ["Ein Junge springt in einen See."], timeout=5)
        assert held.batches == [] and moved(before, counters(client))["hits"] == 1
        # A sentence that is not cached does reach the (held) batcher: the gate is really closed.
        refused = client.post("/v1/translate", json={"texts": ["Ein neuer Satz hier."], "source": "de",
                                                     "target": "en", "timeout": 0.5})
        assert refused.status_code == 504 and held.entered.is_set()
        held.open()
        held.batches.clear()
        # In a text mixing both, only the sentence that is not cached is decoded.
        mixed = native(client, ["Ein Junge springt in einen See. Ein Vogel fliegt."])
        assert held.decoded("Ein Vogel fliegt.") and not held.decoded("Ein Junge springt in einen See.")
    finally:
        ungate(engine, held)
    assert mixed["translations"][0]["text"].startswith(answer["translations"][0]["text"])


def test_different_options_and_models_do_not_share_entries(service):
    engine, client = service
    sentence = "Drei Männer stehen vor einem Gebäude."
    variants = [{"beam_size": 1}, {"beam_size": 2}, {"beam_size": 2, "n_best": 2},
                {"beam_size": 2, "return_attention": True}, {"beam_size": 2, "n_best": 2, "return_attention": True}]
    before = counters(client)
    first = [native(client, [sentence], return_scores=True, **v)["translations"] for v in variants]
    assert moved(before, counters(client))["misses"] == len(variants)
    other_model_before = counters(client, "en-de")
    reverse = client.post("/v1/translate", json={"texts": [sentence], "source": "en", "target": "de",
                                                 "beam_size": 1, "return_scores": True}).json()["translations"]
    assert moved(other_model_before, counters(client, "en-de"))["misses"] == 1
    assert reverse[0]["model"] == "en-de"

    middle = counters(client)
    second = [native(client, [sentence], return_scores=True, **v)["translations"] for v in variants]
    assert moved(middle, counters(client))["hits"] == len(variants)
    assert second == first
    assert "attention" in first[3][0] and "attention" not in first[1][0]
    assert "alternatives" in first[2][0] and "alternatives" not in first[1][0]
    # Stored attention: only the best hypothesis's (nothing else is returned), only when it was asked for.
    with_attention = engine.cache.get(engine_key(engine, sentence, beam_size=2, n_best=2, return_attention=True))
    without = engine.cache.get(engine_key(engine, sentence, beam_size=2, n_best=2))
    assert with_attention[0].attention is not None and all(t.attention is None for t in with_attention[1:])
    assert all(t.attention is None for t in without)


def test_a_replaced_model_never_answers_from_old_entries(service):
    engine, client = service
    native(client, ["Eine Frau singt."], beam_size=1)
    model = engine.registry.models["de-en"]
    changed = replace(model, card=model.card.with_sections(sha256={**model.card.sha256, "decoder.onnx": "0" * 64}))
    assert changed.fingerprint != model.fingerprint
    engine.registry.models["de-en"] = changed  # as a reload of a different model would
    try:
        before = counters(client)
        native(client, ["Eine Frau singt."], beam_size=1)
        assert moved(before, counters(client))["misses"] == 1
    finally:
        engine.registry.models["de-en"] = model


def test_concurrent_requests_get_the_answers_of_an_uncached_service(service):
    engine, client = service
    jobs = [(SENTENCES[i % 6], {"beam_size": 1 + (i // 6) % 3, "return_scores": True}) for i in range(54)]
    saved = engine.cache
    engine.cache = TranslationCache(0)  # the reference: everything decoded
    try:
        reference = {(s, o["beam_size"]): native(client, [s], **o)["translations"] for s, o in jobs[:18]}
    finally:
        engine.cache = TranslationCache(8, metrics=engine.metrics)  # fewer than the 18 combinations: evictions
    try:
        for sentence, options in jobs[:4]:  # the first jobs of the concurrent run find these
            native(client, [sentence], **options)
        before = counters(client)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda job: native(client, [job[0]], **job[1])["translations"], jobs))
        for (sentence, options), answer in zip(jobs, answers):
            expected = reference[(sentence, options["beam_size"])]
            # Batched with other sentences, a decode may differ in the 8th digit of its score (docs/service.md).
            assert [t["text"] for t in answer] == [t["text"] for t in expected]
            assert [t["score"] for t in answer] == pytest.approx([t["score"] for t in expected], abs=1e-5)
        change = moved(before, counters(client))
        assert change["hits"] + change["misses"] == len(jobs) and change["hits"] > 0
        assert len(engine.cache) <= 8
    finally:
        engine.cache = saved


def test_size_zero_turns_the_cache_off(served_models_dir):
    with started_engine(served_models_dir, cache_size=0) as engine, \
            serve_in_thread(create_app(engine.settings, engine)) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        before = counters(client)
        native(client, ["Ein Mann fährt Fahrrad."])
        native(client, ["Ein Mann fährt Fahrrad."])
        assert moved(before, counters(client)) == {"hits": 0, "misses": 0, "decoding": True, "decoded": 2}
        assert len(engine.cache) == 0


def test_eviction_at_capacity_over_http(served_models_dir):
    with started_engine(served_models_dir, cache_size=2) as engine, \
            serve_in_thread(create_app(engine.settings, engine)) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        for sentence in SENTENCES[:3]:  # the third evicts the first
            native(client, [sentence])
        before = counters(client)
        native(client, [SENTENCES[2]])
        native(client, [SENTENCES[1]])
        assert moved(before, counters(client))["hits"] == 2
        before = counters(client)
        native(client, [SENTENCES[0]])  # evicts the least recently used: SENTENCES[2], not the older SENTENCES[1]
        assert moved(before, counters(client)) == {"hits": 0, "misses": 1, "decoding": True, "decoded": 1}
        before = counters(client)
        native(client, [SENTENCES[1]])
        assert moved(before, counters(client))["hits"] == 1
        assert len(engine.cache) == 2
        assert metric_value(client.get("/metrics").text, "mt_cache_entries") == 2


def test_no_request_text_in_metrics_or_logs(service, caplog):
    engine, client = service
    secret = "Geheimnisvolle Katzen tanzen."
    with caplog.at_level(logging.DEBUG):
        for request_id in ("cache-log-1", "cache-log-2"):
            client.post("/v1/translate", json={"texts": [secret], "source": "de", "target": "en"},
                        headers={"X-Request-ID": request_id})
        wait_until(lambda: sum(getattr(r, "request_id", None) in ("cache-log-1", "cache-log-2")
                               for r in caplog.records) == 2, "the access log")
    from service.logs import JsonFormatter

    lines = [JsonFormatter().format(record) for record in caplog.records]
    assert not any("Geheimnis" in line or "Katzen" in line for line in lines)
    logged = {json.loads(line).get("request_id"): json.loads(line) for line in lines}
    assert logged["cache-log-1"]["cache_hits"] == 0 and logged["cache-log-2"]["cache_hits"] == 1
    assert "Geheimnis" not in client.get("/metrics").text
