"""Dynamic batching: grouping, batch invariance, backpressure (429), deadlines (504), client disconnects."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest
from service_helpers import gate, loaded_engine, metric_value, serve_in_thread, wait_until

from inference.search import SearchOptions
from service.api import create_app
from service.batcher import BatcherStopped, BatchKey, BatchLimits, DeadlineExceeded, DynamicBatcher, QueueFull
from service.engine import TranslationJob

FAR = 1e12  # a deadline that never passes


class Recorder:
    """A runner that records its batches; optionally holds them until released."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[tuple[BatchKey, list[list[int]]]] = []
        self.attention: list[bool] = []  # whether each batch decoded attention
        self.release = threading.Event()
        self.entered = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, model_id: str, options: SearchOptions, sources: list[list[int]]) -> list[int]:
        self.batches.append((BatchKey.of(model_id, options), sources))
        self.attention.append(options.return_attention)
        self.entered.set()
        assert self.release.wait(30)
        return [len(s) for s in sources]


def key(model: str = "de-en", beam: int = 1, n_best: int = 1, penalty: float = 1.0) -> BatchKey:
    return BatchKey.of(model, SearchOptions(beam_size=beam, n_best=n_best, length_penalty=penalty))


def submit(batcher: DynamicBatcher, key: BatchKey, sources: list[list[int]], deadline: float = FAR,
           attention: bool = False) -> list:
    return batcher.submit(key.model_id, replace(key.options, return_attention=attention), sources, deadline)


def results(futures) -> list:
    return [f.result(timeout=30)[0] for f in futures]


# ---- the batcher alone -------------------------------------------------------------------------------------------

def test_only_sentences_with_equal_keys_share_a_batch():
    runner = Recorder(hold=True)
    batcher = DynamicBatcher(runner, BatchLimits(max_sentences=8, max_wait_s=0))
    batcher.start()
    blocker = submit(batcher, key("x"), [[1]], FAR)  # occupies the worker while the rest queue up
    assert runner.entered.wait(30)
    keys = [key(), key(beam=4), key(n_best=2, beam=4), key(penalty=0.6), key("en-de"), key()]
    futures = [submit(batcher, k, [[1, 2], [3]], FAR, attention=i == 0) for i, k in enumerate(keys)]
    runner.release.set()
    for f in futures + [blocker]:
        results(f)
    batcher.stop()
    by_key = {}
    for batch_key, sources in runner.batches[1:]:
        by_key.setdefault(batch_key, []).extend(sources)
    assert len(by_key) == 5 and len(runner.batches) == 6  # the two key() submissions were merged
    assert sorted(map(len, by_key[key()])) == [1, 1, 2, 2]
    merged = next(i for i, (k, sources) in enumerate(runner.batches) if k == key() and len(sources) == 4)
    assert runner.attention[merged]  # one of its sentences wanted attention: the batch decodes it


def test_batches_respect_limits_and_group_similar_lengths():
    runner = Recorder(hold=True)
    batcher = DynamicBatcher(runner, BatchLimits(max_sentences=4, max_tokens=10_000, max_wait_s=0))
    batcher.start()
    blocker = submit(batcher, key("x"), [[1]], FAR)
    assert runner.entered.wait(30)
    lengths = [3, 40, 4, 41, 5, 42, 6, 43]
    futures = submit(batcher, key(), [[7] * n for n in lengths], FAR)
    runner.release.set()
    assert results(futures) == lengths  # results come back in submission order
    results(blocker)
    batcher.stop()
    batches = [sorted(map(len, sources)) for _, sources in runner.batches[1:]]
    assert batches == [[3, 4, 5, 6], [40, 41, 42, 43]]


def test_token_limit_splits_batches():
    runner = Recorder()
    batcher = DynamicBatcher(runner, BatchLimits(max_sentences=100, max_tokens=40, max_wait_s=0.05))
    batcher.start()
    results(submit(batcher, key(beam=2), [[1] * 10] * 4, FAR))
    batcher.stop()
    assert [len(sources) for _, sources in runner.batches] == [2, 2]  # 2 sentences x 10 tokens x beam 2 = 40


def test_full_queue_raises_with_a_retry_hint_and_accepts_all_or_nothing():
    runner = Recorder(hold=True)
    batcher = DynamicBatcher(runner, BatchLimits(max_queue=3, max_wait_s=0, min_retry_after_s=2))
    batcher.start()
    running = submit(batcher, key(), [[1]], FAR)
    assert runner.entered.wait(30)
    queued = submit(batcher, key(), [[1], [2]], FAR)
    with pytest.raises(QueueFull) as error:
        submit(batcher, key(), [[3], [4]], FAR)
    assert error.value.retry_after_s >= 2
    assert batcher.depth == 2
    runner.release.set()
    assert results(running + queued) == [1, 1, 1]
    batcher.stop()


def test_expired_and_cancelled_sentences_are_never_decoded():
    runner = Recorder(hold=True)
    clock = {"now": 0.0}
    batcher = DynamicBatcher(runner, BatchLimits(max_wait_s=0), clock=lambda: clock["now"])
    batcher.start()
    running = submit(batcher, key(), [[1]], FAR)
    assert runner.entered.wait(30)
    expiring = submit(batcher, key(), [[2, 2]], deadline=5.0)
    cancelled = submit(batcher, key(), [[3, 3, 3]], FAR)
    kept = submit(batcher, key(), [[4, 4, 4, 4]], FAR)
    assert batcher.cancel(cancelled) == 1
    clock["now"] = 10.0
    runner.release.set()
    assert results(running + kept) == [1, 4]
    with pytest.raises(DeadlineExceeded):
        expiring[0].result(timeout=30)
    assert cancelled[0].cancelled()
    decoded = [len(s) for _, sources in runner.batches for s in sources]
    assert 2 not in decoded and 3 not in decoded
    batcher.stop()


def test_stop_finishes_queued_work_then_refuses_more():
    runner = Recorder()
    batcher = DynamicBatcher(runner, BatchLimits(max_wait_s=10))  # would wait 10 s for company
    batcher.start()
    futures = submit(batcher, key(), [[1], [1, 2]], FAR)
    batcher.stop(timeout=30)  # drains at once instead of waiting out max_wait
    assert results(futures) == [1, 2]
    with pytest.raises(BatcherStopped):
        submit(batcher, key(), [[1]], FAR)


# ---- batch invariance on the real (tiny) model -------------------------------------------------------------------

SENTENCE = "Ein Mann mit einem roten Hut sitzt auf einer Bank."
OTHERS = ["Zwei Hunde spielen im Schnee.", "Eine Frau.", "Ein kleines Mädchen in einem rosa Kleid klettert eine "
          "Treppe hinauf, während ihr Vater auf einem Stuhl im Garten sitzt und Zeitung liest.", "Kinder."]


@pytest.mark.parametrize("beam", [1, 4])
def test_a_sentence_translates_the_same_alone_and_inside_a_mixed_batch(served_models_dir, beam):
    engine = loaded_engine(served_models_dir, max_wait_ms=0)
    try:
        translator = engine.registry.models["de-en"].translator
        options = SearchOptions(beam_size=beam, n_best=min(beam, 2), return_attention=True)
        ids = translator.encode(SENTENCE)
        alone = translator.translate_ids([ids], options)[0]
        for position in range(3):  # first, middle and last row of a padded batch
            batch = [translator.encode(s) for s in OTHERS]
            batch.insert(position, ids)
            mixed = translator.translate_ids(batch, options)[position]
            assert [t.text for t in mixed] == [t.text for t in alone]
            assert [t.score for t in mixed] == pytest.approx([t.score for t in alone], abs=1e-5)
            assert mixed[0].attention == pytest.approx(alone[0].attention, abs=1e-5)
    finally:
        engine.stop()


def test_concurrent_requests_share_batches_without_changing_results(served_models_dir):
    """Through the batcher: many jobs queued together decode in shared batches, results as if alone."""
    engine = loaded_engine(served_models_dir, max_wait_ms=0)
    try:
        texts = [SENTENCE] + OTHERS
        alone = [asyncio.run(engine.translate(TranslationJob([t], "de", "en", beam_size=3))).translations[0].text
                 for t in texts]
        held = gate(engine)

        async def together() -> list[str]:
            first = asyncio.ensure_future(engine.translate(TranslationJob(["Ein Hund."], "de", "en", beam_size=3)))
            await asyncio.to_thread(held.entered.wait, 30)  # the worker is now held inside a batch
            jobs = [asyncio.ensure_future(engine.translate(TranslationJob([t], "de", "en", beam_size=3)))
                    for t in texts]
            await asyncio.to_thread(wait_until, lambda: engine.batcher.depth == len(texts), "queued sentences")
            held.open()
            await first
            return [(await job).translations[0].text for job in jobs]

        assert asyncio.run(together()) == alone
        assert sorted(map(len, held.batches)) == [1, len(texts)]  # all five decoded in one batch
    finally:
        engine.stop()


# ---- over HTTP: backpressure, deadlines, disconnects -------------------------------------------------------------

@pytest.fixture(params=["batch", "continuous"])
def held_server(request, served_models_dir):
    """A server whose de-en encoder calls are held at a gate, its queue full with two short sentences; yields
    (url, engine, gate)."""
    engine = loaded_engine(served_models_dir, scheduler=request.param, max_wait_ms=0, max_queue_sentences=2,
                           retry_after_s=3)
    if request.param == "continuous":  # the queue holds work (source tokens x beam), here that of two sentences
        translator = engine.registry.models["de-en"].translator
        engine.batcher.limits = replace(engine.batcher.limits, max_queue_work=sum(
            len(translator.encode(s)) for s in ("Eine Katze.", "Ein Pferd.")))
    held = gate(engine)
    try:
        with serve_in_thread(create_app(engine.settings, engine)) as url:
            yield url, engine, held
            held.open()
    finally:
        held.open()
        engine.stop()


def post(url: str, payload: dict, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{url}/v1/translate", json=payload, timeout=timeout)


def job(text: str, **extra) -> dict:
    return {"texts": [text], "source": "de", "target": "en", "beam_size": 1, **extra}


def test_full_queue_answers_429_with_retry_after(held_server):
    url, engine, held = held_server
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(post, url, job("Ein Hund."))
        assert held.entered.wait(30)  # decoding, held: the queue is empty again
        second = pool.submit(post, url, job("Eine Katze. Ein Pferd."))  # 2 sentences: the queue is full
        wait_until(lambda: engine.batcher.depth == 2, "a full queue")
        refused = post(url, job("Ein Vogel."))
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 3
        assert "error" in refused.json()
        libre = httpx.post(f"{url}/translate", data={"q": "Ein Vogel.", "source": "de", "target": "en"}, timeout=60)
        assert libre.status_code == 429 and libre.headers["Retry-After"]
        held.open()
        assert first.result().status_code == 200 and second.result().status_code == 200
    metrics = httpx.get(f"{url}/metrics").text
    assert metric_value(metrics, "mt_rejections_total", {"reason": "queue_full"}) == 2
    assert metric_value(metrics, "mt_http_requests_total", {"endpoint": "/v1/translate", "status": "429"}) == 1


def test_deadline_answers_504_and_drops_the_unstarted_work(held_server):
    url, engine, held = held_server
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, url, job("Ein Hund."))
        assert held.entered.wait(30)
        late = post(url, job("Eine Katze schläft.", timeout=0.3))
        assert late.status_code == 504
        assert "deadline" in late.json()["error"]
        assert engine.batcher.depth == 0  # its queued sentence was withdrawn at once
        held.open()
        assert first.result().status_code == 200
    assert not held.decoded("Eine Katze schläft.")
    metrics = httpx.get(f"{url}/metrics").text
    assert metric_value(metrics, "mt_rejections_total", {"reason": "deadline"}) == 1


def test_timeout_outside_the_allowed_range_is_a_400(held_server):
    url, _, _ = held_server
    for timeout in (0.0, -1, 10_000):
        response = post(url, job("Ein Hund.", timeout=timeout))
        assert response.status_code == 400 and "timeout" in response.json()["error"]


def test_client_disconnect_cancels_its_queued_work(held_server):
    url, engine, held = held_server
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, url, job("Ein Hund."))
        assert held.entered.wait(30)
        leaver = pool.submit(post, url, job("Ein Pferd rennt."), 1.0)  # the client gives up after 1 s
        wait_until(lambda: engine.batcher.depth == 1, "the leaver's sentence to be queued")
        with pytest.raises(httpx.TimeoutException):
            leaver.result()
        wait_until(lambda: engine.batcher.depth == 0, "the server to withdraw the sentence")
        held.open()
        assert first.result().status_code == 200
    assert not held.decoded("Ein Pferd rennt.")
    metrics = httpx.get(f"{url}/metrics").text
    assert metric_value(metrics, "mt_rejections_total", {"reason": "client_disconnected"}) == 1
    assert metric_value(metrics, "mt_dropped_sentences_total", {"reason": "cancelled"}) == 1


def test_a_large_job_is_prepared_off_the_event_loop_and_reassembled_in_order(served_models_dir):
    from service import engine as engine_module

    engine = loaded_engine(served_models_dir)
    try:
        sentences = [f"Ein Hund rennt {n} Mal um das Haus." for n in range(70)]
        text = " ".join(sentences)
        assert len(text) > engine_module.INLINE_PREPARATION_CHARS
        result = asyncio.run(engine.translate(TranslationJob([text], "de", "en", beam_size=1,
                                                             return_attention=True)))
        translation = result.translations[0]
        assert result.sentences == 70 and [s.source for s in translation.sentences] == sentences
        assert translation.text == " ".join(s.text for s in translation.sentences)
        single = asyncio.run(engine.translate(TranslationJob([sentences[42]], "de", "en", beam_size=1)))
        assert translation.sentences[42].text == single.translations[0].text
    finally:
        engine.stop()
