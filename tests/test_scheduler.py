"""The continuous scheduler (service/scheduler.py): answers as sentences finish, fair admission, work-based
queue limits, deadlines and cancellation mid-decode, a failing step, a dead loop reported by readiness."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError

import httpx
import numpy as np
import pytest
from service_helpers import loaded_engine, serve_in_thread, wait_until

from inference.search import SearchOptions
from inference.step_model import Encoded
from service.api import create_app
from service.batcher import BatcherStopped, DeadlineExceeded, QueueFull
from service.engine import TranslationJob
from service.scheduler import ModelScheduler, SchedulerLimits

FAR = 1e12  # a deadline that never passes
TOKEN, EOS, POISON = 5, 3, 7


class CountingModel:
    """A step model whose translation of a source is ``source[0]`` tokens long: one token per step, then </s>.

    The state of a row is (length wanted, tokens so far). It counts decoder calls, records the step at which each
    source was encoded, can pause every step (``delay_s``) and fails any step that holds a ``POISON`` source.
    """

    bos_id, eos_id, vocab = 2, EOS, 8

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.steps = 0
        self.rows: list[int] = []  # rows in each decoder call
        self.admitted_at: dict[int, int] = {}  # source id (source[1]) -> decoder calls before its encoder call
        self.lock = threading.Lock()

    def encode(self, src: np.ndarray, lengths: np.ndarray) -> Encoded:
        for row in src:
            self.admitted_at[int(row[1])] = self.steps
        batch, width = src.shape
        mask = np.arange(width)[None, :] < lengths[:, None]
        state = np.stack([src[:, 0], np.zeros(batch), (src == POISON).any(1)], axis=1).astype(np.float32)
        return Encoded(np.zeros((batch, width, 1), np.float32), np.zeros((batch, width, 1), np.float32), mask, state)

    def step(self, prev_tokens: np.ndarray, state: np.ndarray, encoded: Encoded):
        self.steps += 1
        self.rows.append(len(prev_tokens))
        if self.delay_s:
            time.sleep(self.delay_s)
        if state[:, 2].any():
            raise RuntimeError("poisoned step")
        log_probs = np.full((len(prev_tokens), self.vocab), -20.0, np.float32)
        ends = state[:, 1] >= state[:, 0]
        log_probs[ends, EOS] = 0.0
        log_probs[~ends, TOKEN] = 0.0
        new_state = state.copy()
        new_state[:, 1] += 1
        return log_probs, new_state, None


def source(length: int, ident: int, size: int = 4) -> list[int]:
    """A source whose translation is ``length`` tokens; ``ident`` names it in ``CountingModel.admitted_at``."""
    return [length, ident] + [4] * (size - 3) + [EOS]


@pytest.fixture
def make_scheduler():
    made: list[ModelScheduler] = []

    def make(model: CountingModel, **limits) -> ModelScheduler:
        scheduler = ModelScheduler("m", model, SchedulerLimits(**limits))
        scheduler.start()
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.stop(5)


GREEDY = SearchOptions(beam_size=1, max_length_ratio=100.0)  # the length limit is the cap, 256


def test_each_sentence_is_answered_when_it_finishes_not_when_its_batch_does(make_scheduler):
    model = CountingModel(delay_s=0.002)
    scheduler = make_scheduler(model)
    long, short = scheduler.submit([source(60, 1), source(2, 2)], GREEDY, FAR)
    hypotheses, stats = short.result(10)
    assert hypotheses[0].tokens == [TOKEN, TOKEN] and hypotheses[0].complete
    assert not long.done()  # still decoding: 3 steps done of 61
    assert long.result(10)[0][0].tokens == [TOKEN] * 60
    assert stats.batch_size == 2 and stats.inference_s > 0


def test_a_one_sentence_request_is_admitted_within_a_few_steps_of_a_huge_one(make_scheduler):
    model = CountingModel(delay_s=0.001)
    scheduler = make_scheduler(model, max_rows=8)
    huge = scheduler.submit([source(10, 100 + i) for i in range(400)], GREEDY, FAR, flow="bulk")
    wait_until(lambda: model.steps >= 25, "the huge request to be decoding")
    submitted_at = model.steps
    (single,) = scheduler.submit([source(3, 1)], GREEDY, FAR, flow="interactive")
    single.result(10)
    # 8 rows are busy with 10-step sentences: one frees within 11 steps, and the newcomer goes first.
    assert model.admitted_at[1] - submitted_at <= 11
    assert scheduler.depth > 300  # most of the huge request is still waiting
    scheduler.cancel(huge)


def test_requests_of_one_flow_take_turns(make_scheduler):
    model = CountingModel(delay_s=0.001)
    scheduler = make_scheduler(model, max_rows=4)
    first = scheduler.submit([source(5, 100 + i) for i in range(100)], GREEDY, FAR, flow="same")
    wait_until(lambda: model.steps >= 10, "the first request to be decoding")
    submitted_at = model.steps
    second = scheduler.submit([source(2, 1), source(2, 2)], GREEDY, FAR, flow="same")
    for future in second:
        future.result(10)
    assert max(model.admitted_at[1], model.admitted_at[2]) - submitted_at <= 12
    scheduler.cancel(first)


def test_bulk_requests_give_up_rows_while_a_small_request_decodes(make_scheduler):
    model = CountingModel(delay_s=0.001)
    linger_s = 0.3
    scheduler = make_scheduler(model, max_rows=16, bulk_sentences=2, shared_bulk_rows=4, small_linger_s=linger_s)
    bulk = scheduler.submit([source(10, 100 + i) for i in range(5000)], GREEDY, FAR, flow="bulk")
    wait_until(lambda: model.steps >= 15, "the bulk request to be decoding")
    assert model.rows[-1] == 16  # alone, bulk takes every row
    submitted_at = model.steps
    (small,) = scheduler.submit([source(40, 1)], GREEDY, FAR, flow="interactive")
    small.result(10)
    finished_at, finished_s = model.steps, time.monotonic()
    assert model.admitted_at[1] - submitted_at <= 11
    # Once the bulk sentences active when it came have finished (11 steps), the small one shares the step with at
    # most 4 bulk rows.
    assert max(model.rows[model.admitted_at[1] + 12 : finished_at - 1]) <= 4 + 1
    # The cap stays a while (the client may send again soon), then lifts.
    wait_until(lambda: model.steps >= finished_at + 15, "bulk to go on")
    if time.monotonic() - finished_s < linger_s:
        assert max(model.rows[finished_at + 2 :]) <= 4
    wait_until(lambda: time.monotonic() - finished_s > linger_s, "the linger time to pass")
    steps = model.steps
    wait_until(lambda: model.steps >= steps + 15, "bulk to go on alone")
    assert model.rows[-1] == 16

    # A small request that leaves before it is admitted lifts the cap as well.
    (waiting,) = scheduler.submit([source(3, 2)], GREEDY, FAR, flow="interactive")
    scheduler.cancel([waiting])
    gone_s = time.monotonic()
    wait_until(lambda: time.monotonic() - gone_s > linger_s, "the linger time to pass")
    steps = model.steps
    wait_until(lambda: model.steps >= steps + 15, "bulk to go on alone")
    assert model.rows[-1] == 16
    scheduler.cancel(bulk)


def test_the_queue_is_bounded_by_work_and_says_when_to_retry(make_scheduler):
    model = CountingModel(delay_s=0.005)
    scheduler = make_scheduler(model, max_rows=1, max_queue_work=40, min_retry_after_s=2)
    running = scheduler.submit([source(50, 1, size=10)], GREEDY, FAR)  # 10 tokens x beam 1 = 10 units, admitted
    wait_until(lambda: model.steps >= 1, "the first sentence to be decoding")
    queued = scheduler.submit([source(1, 2, size=10)], SearchOptions(beam_size=4), FAR)  # 10 x 4 = 40: full
    with pytest.raises(QueueFull) as refused:
        scheduler.submit([source(1, 3, size=2)], GREEDY, FAR)
    assert refused.value.retry_after_s >= 2
    scheduler.cancel(running + queued)


def test_a_deadline_withdraws_a_sentence_mid_decode(make_scheduler):
    model = CountingModel(delay_s=0.002)
    scheduler = make_scheduler(model)
    late = scheduler.submit([source(250, 1)], GREEDY, time.monotonic() + 0.1)[0]
    (other,) = scheduler.submit([source(40, 2)], GREEDY, FAR)
    with pytest.raises(DeadlineExceeded):
        late.result(10)
    assert other.result(10)[0][0].tokens == [TOKEN] * 40  # its companion carries on
    assert model.steps < 200  # the late one was not decoded to its end
    wait_until(lambda: scheduler.search.rows == 0, "the rows to be released")


def test_a_cancelled_sentence_leaves_at_the_next_step(make_scheduler):
    model = CountingModel(delay_s=0.002)
    scheduler = make_scheduler(model)
    (gone,) = scheduler.submit([source(250, 1)], GREEDY, FAR)
    (kept,) = scheduler.submit([source(20, 2)], GREEDY, FAR)
    wait_until(lambda: model.steps >= 3, "decoding")
    assert scheduler.cancel([gone]) == 1
    with pytest.raises(CancelledError):
        gone.result(10)
    assert kept.result(10)[0][0].tokens == [TOKEN] * 20
    assert model.steps < 100


def test_a_failing_step_fails_only_the_requests_in_it(make_scheduler):
    model = CountingModel()
    scheduler = make_scheduler(model)
    poisoned = scheduler.submit([source(3, 1), [3, 2, POISON, EOS]], GREEDY, FAR)
    for future in poisoned:
        with pytest.raises(RuntimeError, match="poisoned"):
            future.result(10)
    (after,) = scheduler.submit([source(3, 3)], GREEDY, FAR)
    assert after.result(10)[0][0].tokens == [TOKEN] * 3
    assert scheduler.healthy


def test_stop_finishes_active_and_queued_work_then_refuses_more():
    model = CountingModel(delay_s=0.001)
    scheduler = ModelScheduler("m", model, SchedulerLimits(max_rows=2))
    scheduler.start()
    futures = scheduler.submit([source(5, i) for i in range(6)], GREEDY, FAR)
    scheduler.stop(10)
    assert all(f.result(0)[0][0].tokens == [TOKEN] * 5 for f in futures)
    with pytest.raises(BatcherStopped):
        scheduler.submit([source(1, 9)], GREEDY, FAR)


def test_a_dead_scheduler_loop_turns_readiness_off(served_models_dir, monkeypatch):
    engine = loaded_engine(served_models_dir, scheduler="continuous")
    try:
        with serve_in_thread(create_app(engine.settings, engine)) as url:
            assert httpx.get(f"{url}/health/ready").status_code == 200
            scheduler = engine.batcher.scheduler("de-en")
            monkeypatch.setattr(scheduler, "_admit_locked", lambda: 1 / 0)  # a bug in the loop itself
            response = httpx.post(f"{url}/v1/translate", json={"texts": ["Ein Hund."], "source": "de",
                                                                "target": "en"}, timeout=30)
            assert response.status_code == 503
            wait_until(lambda: not scheduler.healthy, "the loop to die")
            ready = httpx.get(f"{url}/health/ready")
            assert ready.status_code == 503 and "scheduler" in ready.text
    finally:
        engine.stop()


def test_one_request_larger_than_the_queue_is_a_400_that_says_why(served_models_dir):
    import asyncio

    from service.errors import InvalidJob

    engine = loaded_engine(served_models_dir, scheduler="continuous", max_queue_work=30)
    try:
        with pytest.raises(InvalidJob, match="units of work"):
            asyncio.run(engine.translate(TranslationJob(["Ein Hund läuft. " * 8], "de", "en", beam_size=4)))
    finally:
        engine.stop()
