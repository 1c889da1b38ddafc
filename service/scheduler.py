"""Step-level continuous batching: one decode loop per model that sentences join and leave at every step.

Each model has a ``ModelScheduler`` with one worker thread and one ``StepSearch``. At every step the worker
withdraws the sentences whose request was cancelled or whose deadline passed, admits waiting sentences (one
encoder call for all newcomers), advances every active row by one decoder call, and answers each sentence the
moment it finishes. A request is therefore never held back by a longer sentence of its own or another batch,
and a sentence that arrives while others decode starts at the next step.

Admission is fair: waiting sentences are grouped by flow (API key, or the client when there is none) and,
within a flow, by request; each admission takes one sentence from the next flow in round-robin order, and
within that flow from the next request. A one-sentence request is thus admitted as soon as a few rows free up,
however large the other requests are. Active rows are bounded (``max_rows`` rows, ``max_tokens`` rows x longest
source), and the queue is bounded by work (source tokens x beam size), not by sentence count.

Fair admission alone does not make a small request fast beside a bulk one: it then decodes at the pace of a step
over every bulk row. So while a small request (at most ``bulk_sentences`` sentences) waits or decodes, the
sentences of bulk requests are admitted only while they hold fewer than ``shared_bulk_rows`` rows; the bulk rows
drain to that as their sentences finish, which takes a whole sentence's decoding; so the cap stays for
``small_linger_s`` after the last small request left, as an interactive client tends to send its next one soon.

``ContinuousBatcher`` routes requests to the model's scheduler and has the ``DynamicBatcher``'s interface, so the
engine can use either. Nothing here knows about HTTP.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

from inference.search import SearchOptions, StepModel, StepSearch
from service.batcher import BatcherStopped, BatchStats, DeadlineExceeded, QueueFull
from service.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SchedulerLimits:
    max_rows: int = 128  # active decoder rows (sentences x beam)
    max_tokens: int = 16384  # active rows x longest active source, in tokens
    max_queue_work: int = 200_000  # waiting source tokens x beam size, all requests together
    bulk_sentences: int = 16  # a request of more sentences is bulk
    shared_bulk_rows: int = 32  # rows bulk requests may hold while a smaller request waits or decodes
    small_linger_s: float = 1.0  # ... and for this long after the last one left
    min_retry_after_s: int = 1


def work(source: list[int], beam_size: int) -> int:
    """What a sentence costs, in source tokens x beam size: decoding steps grow with the source length and every
    step costs one row per beam."""
    return len(source) * beam_size


@dataclass(eq=False)
class _Item:
    """One sentence: what to decode, how, until when, and where its answer goes."""

    source: list[int]
    options: SearchOptions
    deadline: float
    enqueued: float
    bulk: bool = False
    future: Future = field(default_factory=Future)
    admitted: float = 0.0

    @property
    def work(self) -> int:
        return work(self.source, self.options.beam_size)


@dataclass(eq=False)
class _Request:
    """One ``submit``: its waiting sentences, all with the same deadline."""

    items: deque[_Item]
    deadline: float


class ModelScheduler:
    """The decode loop of one model. ``submit``/``cancel`` from any thread; results arrive on the futures as
    ``(n-best hypotheses, BatchStats)``."""

    def __init__(self, model_id: str, model: StepModel, limits: SchedulerLimits, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.model_id = model_id
        self.search = StepSearch(model)
        self.limits = limits
        self._metrics = metrics
        self._clock = clock
        self._cond = threading.Condition()
        self._flows: OrderedDict[str, deque[_Request]] = OrderedDict()  # round-robin order of waiting flows
        self._waiting = 0  # sentences
        self._waiting_work = 0
        self._withdrawn: set[_Item] = set()  # active items to drop at the next step (cancelled)
        self._active: dict[_Item, None] = {}  # admitted, not finished (insertion-ordered set)
        self._bulk_rows = 0  # active rows of bulk requests
        self._small_items = 0  # sentences of small requests, waiting or active
        self._bulk_capped_until = -math.inf  # while a small request is here and for small_linger_s after
        self._next_deadline = math.inf  # the earliest deadline of an active item
        self._stopping = False
        self._failure: str | None = None
        self._thread: threading.Thread | None = None
        self._work_per_s = 0.0  # moving average of finished work per second, for Retry-After

    # ---- callers ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"mt-scheduler-{self.model_id}", daemon=True)
            self._thread.start()

    @property
    def depth(self) -> int:
        """Sentences waiting to be admitted."""
        return self._waiting

    @property
    def healthy(self) -> bool:
        """False once the loop has died (it survives failing steps; this is for bugs in the loop itself)."""
        return self._failure is None and (self._thread is None or self._thread.is_alive() or self._stopping)

    def submit(self, sources: list[list[int]], options: SearchOptions, deadline: float, flow: str = "") -> list[Future]:
        """Queue all of ``sources`` as one request of ``flow``, or none of them (``QueueFull``)."""
        now = self._clock()
        bulk = len(sources) > self.limits.bulk_sentences
        items = [_Item(source, options, deadline, now, bulk) for source in sources]
        total = sum(item.work for item in items)
        with self._cond:
            if self._stopping or self._failure is not None:
                raise BatcherStopped("shutting down" if self._stopping else f"scheduler failed: {self._failure}")
            if self._waiting_work + total > self.limits.max_queue_work and (self._waiting or self._active):
                raise QueueFull(self._retry_after_locked(total))
            self._flows.setdefault(flow, deque()).append(_Request(deque(items), deadline))
            self._waiting += len(items)
            self._waiting_work += total
            self._small_items += 0 if bulk else len(items)
            self._count_waiting(len(items))
            self._cond.notify()
        return [item.future for item in items]

    def cancel(self, futures: Sequence[Future]) -> int:
        """Withdraw work whose caller gave up: waiting sentences at once, active ones at the next step."""
        targets = set(futures)
        dropped = 0
        with self._cond:
            for flow, requests in list(self._flows.items()):
                for request in list(requests):
                    kept = deque(item for item in request.items if item.future not in targets)
                    for item in request.items:
                        if item.future in targets:
                            item.future.cancel()
                            self._unqueue_locked(item)
                            dropped += 1
                    request.items = kept
                    if not kept:
                        requests.remove(request)
                if not requests:
                    del self._flows[flow]
            for item in self._active:
                if item.future in targets:
                    self._withdrawn.add(item)
                    dropped += 1
            self._cond.notify()
        if dropped and self._metrics:
            self._metrics.dropped_sentences.labels("cancelled").inc(dropped)
        return dropped

    def stop(self, timeout: float | None = None) -> None:
        """Take no more work, finish what is queued and active (up to ``timeout`` s), then fail what is left."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._cond:
            leftovers = [item for requests in self._flows.values() for r in requests for item in r.items]
            leftovers += list(self._active)
            self._active.clear()
            self._flows.clear()
            self._bulk_rows = self._small_items = 0
            self._count_waiting(-self._waiting)
            self._waiting = self._waiting_work = 0
        for item in leftovers:
            if not item.future.done() and (item.future.running() or item.future.set_running_or_notify_cancel()):
                item.future.set_exception(BatcherStopped("shut down before this sentence was decoded"))
        if leftovers:
            log.warning("shutdown: %d sentences of model %s were not decoded", len(leftovers), self.model_id)

    # ---- the loop ---------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._waiting and not self._active and not self._stopping:
                        self._cond.wait()
                    if self._stopping and not self._waiting and not self._active:
                        return
                    withdrawn = self._due_withdrawals_locked()
                    newcomers = self._admit_locked()
                if withdrawn:
                    self.search.withdraw(set(withdrawn))
                if newcomers:
                    self._start(newcomers)
                if self._active:
                    self._step()
        except Exception as error:  # noqa: BLE001 - a bug in the loop: fail everything, readiness reports it
            log.exception("scheduler loop of model %s died", self.model_id)
            with self._cond:
                self._failure = repr(error)
            self.stop(0)

    def _due_withdrawals_locked(self) -> list[_Item]:
        """Active items cancelled or past their deadline (failed here), and expired waiting ones (failed too)."""
        now = self._clock()
        due: list[_Item] = []
        if self._withdrawn or now >= self._next_deadline:  # else nothing active is due: skip the scan
            due = [item for item in self._active if item in self._withdrawn or item.deadline <= now]
            going_on = self._active.keys() - set(due)
            self._next_deadline = min((item.deadline for item in going_on), default=math.inf)
        for item in due:
            self._deactivate_locked(item)
            if not item.future.done():
                error = CancelledError() if item in self._withdrawn else DeadlineExceeded("deadline passed")
                item.future.set_exception(error)
            if item not in self._withdrawn and self._metrics:
                self._metrics.dropped_sentences.labels("deadline").inc()
        self._withdrawn.clear()
        for flow, requests in list(self._flows.items()):
            for request in [r for r in requests if r.deadline <= now]:
                expired, request.items = request.items, deque()
                for item in expired:
                    self._unqueue_locked(item)
                    if item.future.set_running_or_notify_cancel():
                        item.future.set_exception(DeadlineExceeded("deadline passed while queued"))
                    if self._metrics:
                        self._metrics.dropped_sentences.labels("deadline").inc()
                requests.remove(request)
            if not requests:
                del self._flows[flow]
        return due

    def _admit_locked(self) -> list[_Item]:
        """Take waiting sentences round-robin over flows (and over requests within a flow) while they fit; a flow
        whose next sentence is bulk and held back (see the module's docstring) lets the others go first."""
        rows = self.search.rows
        width = self.search.width if rows else 0
        bulk_rows = self._bulk_rows
        admitted: list[_Item] = []
        held_back: dict[str, None] = {}  # flows skipped this time, in their round-robin order
        now = self._clock()
        if self._small_items:
            self._bulk_capped_until = now + self.limits.small_linger_s
        capped = now < self._bulk_capped_until
        while self._flows:
            flow, requests = next(iter(self._flows.items()))
            request = requests[0]
            item = request.items[0]
            beam = item.options.beam_size
            if flow in held_back or (item.bulk and capped and bulk_rows
                                     and bulk_rows + beam > self.limits.shared_bulk_rows):
                held_back.setdefault(flow)
                if len(held_back) == len(self._flows):
                    break
                self._flows.move_to_end(flow)
                continue
            fits = (rows + beam <= self.limits.max_rows
                    and (rows + beam) * max(width, len(item.source)) <= self.limits.max_tokens)
            if not fits and (rows or admitted):
                break
            request.items.popleft()
            running = item.future.set_running_or_notify_cancel()  # False: cancelled while waiting
            self._unqueue_locked(item, admitted=running)
            requests.rotate(-1)
            if not request.items:
                requests.remove(request)
            self._flows.move_to_end(flow)
            if not requests:
                del self._flows[flow]
            if not running:
                continue
            item.admitted = now
            admitted.append(item)
            rows += beam
            bulk_rows += beam if item.bulk else 0
            width = max(width, len(item.source))
        for flow in reversed(held_back):  # they keep their turn for the next admission
            if flow in self._flows:
                self._flows.move_to_end(flow, last=False)
        return admitted

    def _start(self, items: list[_Item]) -> None:
        """Encode and admit newcomers; if the encoder fails, only they fail."""
        try:
            self.search.admit([item.source for item in items], [item.options for item in items], items)
        except Exception as error:  # noqa: BLE001 - the callers get the error; the loop lives on
            log.exception("encoder call failed (model %s, %d sentences)", self.model_id, len(items))
            with self._cond:
                self._small_items -= sum(not item.bulk for item in items)
            for item in items:
                item.future.set_exception(error)
            return
        with self._cond:
            for item in items:
                self._active[item] = None
                self._bulk_rows += item.options.beam_size if item.bulk else 0
            self._next_deadline = min(self._next_deadline, min(item.deadline for item in items))
        if self._metrics:
            for item in items:
                self._metrics.queue_wait.observe(item.admitted - item.enqueued)

    def _step(self) -> None:
        """One decoder call for every active row; answer the sentences that finished. If the step fails, the
        sentences in it fail and the loop goes on with an empty batch."""
        started = self._clock()
        sentences, padding = len(self.search), self.search.padding_ratio()
        try:
            finished = self.search.step()
        except Exception as error:  # noqa: BLE001
            log.exception("decoder step failed (model %s, %d sentences)", self.model_id, sentences)
            failed = self.search.clear()
            with self._cond:
                for item in failed:
                    self._deactivate_locked(item)
            for item in failed:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        now = self._clock()
        if finished:
            with self._cond:
                for item, _ in finished:
                    self._deactivate_locked(item)
            for item, hypotheses in finished:
                if not item.future.done():
                    item.future.set_result((hypotheses, BatchStats(item.admitted - item.enqueued, now - item.admitted,
                                                                   sentences, now)))
        self._observe_work(sum(item.work for item, _ in finished), now - started)
        if self._metrics:
            m = self._metrics
            m.batch_inference.labels(self.model_id).observe(now - started)
            m.batch_size.labels(self.model_id).observe(sentences)
            m.padding_ratio.labels(self.model_id).observe(padding)
            m.active_rows.labels(self.model_id).set(self.search.rows)
            m.decoder_steps.labels(self.model_id).inc()
            if finished:
                m.sentences.labels(self.model_id).inc(len(finished))
                m.generated_tokens.labels(self.model_id).inc(
                    sum(len(h[0].tokens) + h[0].complete for _, h in finished if h))

    def _observe_work(self, done_work: int, step_s: float) -> None:
        """Moving average over steps of the work finished per second (most steps finish none)."""
        speed = done_work / max(step_s, 1e-6)
        self._work_per_s = speed if not self._work_per_s else 0.95 * self._work_per_s + 0.05 * speed

    # ---- bookkeeping ------------------------------------------------------------------------------------------

    def _deactivate_locked(self, item: _Item) -> None:
        """An active sentence leaves (finished, failed, withdrawn)."""
        if item in self._active:
            del self._active[item]
            if item.bulk:
                self._bulk_rows -= item.options.beam_size
            else:
                self._small_items -= 1

    def _unqueue_locked(self, item: _Item, admitted: bool = False) -> None:
        """A waiting sentence leaves the queue: admitted (a small one stays counted until it finishes) or not."""
        if not admitted and not item.bulk:
            self._small_items -= 1
        self._waiting -= 1
        self._waiting_work -= item.work
        self._count_waiting(-1)

    def _count_waiting(self, change: int) -> None:
        if self._metrics and change:
            self._metrics.queue_depth.inc(change)

    def _retry_after_locked(self, incoming: int) -> int:
        """Seconds until the queue has likely drained enough to take ``incoming`` more work."""
        if not self._work_per_s:
            return self.limits.min_retry_after_s
        excess = self._waiting_work + incoming - self.limits.max_queue_work
        return max(self.limits.min_retry_after_s, min(60, math.ceil(excess / self._work_per_s)))


class ContinuousBatcher:
    """One ``ModelScheduler`` per model behind the ``DynamicBatcher``'s interface."""

    def __init__(self, model_for: Callable[[str], StepModel], limits: SchedulerLimits,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._model_for = model_for
        self.limits = limits
        self._metrics, self._clock = metrics, clock
        self._schedulers: dict[str, ModelScheduler] = {}
        self._lock = threading.Lock()
        self._started = self._stopped = False

    def scheduler(self, model_id: str) -> ModelScheduler:
        with self._lock:
            if self._stopped:
                raise BatcherStopped("shutting down")
            scheduler = self._schedulers.get(model_id)
            if scheduler is None:
                scheduler = ModelScheduler(model_id, self._model_for(model_id), self.limits, self._metrics,
                                           self._clock)
                self._schedulers[model_id] = scheduler
                if self._started:
                    scheduler.start()
            return scheduler

    def start(self) -> None:
        with self._lock:
            self._started = True
            for scheduler in self._schedulers.values():
                scheduler.start()

    @property
    def depth(self) -> int:
        return sum(s.depth for s in list(self._schedulers.values()))

    @property
    def healthy(self) -> bool:
        return all(s.healthy for s in list(self._schedulers.values()))

    def submit(self, model_id: str, options: SearchOptions, sources: list[list[int]], deadline: float,
               flow: str = "") -> list[Future]:
        return self.scheduler(model_id).submit(sources, options, deadline, flow)

    def cancel(self, futures: Sequence[Future]) -> int:
        return sum(s.cancel(futures) for s in list(self._schedulers.values()))

    def stop(self, timeout: float | None = None) -> None:
        with self._lock:
            self._stopped = True
            schedulers = list(self._schedulers.values())
        for scheduler in schedulers:
            scheduler.stop(timeout)

