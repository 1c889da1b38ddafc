"""Dynamic batching: sentences from any number of callers are queued and decoded together on one worker thread.

Sentences share a decoder batch only when they have the same model and search options (attention aside: a batch
decodes it when any of its sentences wants it), because one search runs with one set of options. A batch is
started when its group has ``max_sentences`` sentences or ``max_tokens`` tokens queued, or when the group's oldest
sentence has waited ``max_wait_s``. The oldest queued sentence is always in the next batch (no starvation); the rest of the batch
is filled with the sentences of its group closest to it in length, so long and short sentences are not
padded to each other.

The queue is bounded (``max_queue`` sentences): ``submit`` raises ``QueueFull`` with a retry hint rather
than letting latency grow without limit. Sentences whose deadline passed, or whose caller cancelled, are
dropped before they are decoded. Decoding runs on the worker thread (onnxruntime releases the GIL), so the
caller's event loop stays responsive. Nothing here knows about HTTP.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from inference.search import SearchOptions
from service.metrics import Metrics

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue cannot take the sentences now; try again after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"queue full, retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class DeadlineExceeded(Exception):
    """The sentence's deadline passed before it could be decoded."""


class BatcherStopped(Exception):
    """The batcher is shutting down and takes no more work."""


@dataclass(frozen=True)
class BatchKey:
    """What sentences must share to be decoded in one batch: the model and the search options, attention aside."""

    model_id: str
    options: SearchOptions

    @classmethod
    def of(cls, model_id: str, options: SearchOptions) -> BatchKey:
        return cls(model_id, replace(options, return_attention=False))


@dataclass(frozen=True)
class BatchLimits:
    max_sentences: int = 32
    max_tokens: int = 4096  # padded source tokens x beam size
    max_wait_s: float = 0.01
    max_queue: int = 2048  # queued sentences, all keys together
    min_retry_after_s: int = 1


@dataclass(frozen=True)
class BatchStats:
    """How one sentence was served: its wait in the queue, then decoding from ``finished - inference_s`` to
    ``finished`` (monotonic clock) in a batch of ``batch_size`` sentences."""

    queue_s: float
    inference_s: float
    batch_size: int
    finished: float


# runner(model id, search options, sources [B lists of token ids]) -> one result per source, in order
Runner = Callable[[str, SearchOptions, list[list[int]]], Sequence[Any]]


@dataclass(eq=False)
class _Item:
    key: BatchKey
    source: list[int]
    want_attention: bool
    deadline: float
    enqueued: float
    future: Future = field(default_factory=Future)


class DynamicBatcher:
    """Queue + one worker thread. ``submit`` from any thread; results arrive as ``(result, BatchStats)``."""

    def __init__(self, runner: Runner, limits: BatchLimits, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._runner = runner
        self.limits = limits
        self._metrics = metrics
        self._clock = clock
        self._cond = threading.Condition()
        self._groups: dict[BatchKey, list[_Item]] = {}  # FIFO per key
        self._depth = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._sentences_per_s = 0.0  # moving average of decoding speed, for Retry-After

    # ---- callers ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="mt-batcher", daemon=True)
            self._thread.start()

    @property
    def depth(self) -> int:
        """Sentences queued and not yet started."""
        return self._depth

    def submit(self, model_id: str, options: SearchOptions, sources: list[list[int]], deadline: float,
               flow: str = "") -> list[Future]:
        """Queue all of ``sources`` or none of them; ``deadline`` is on this batcher's clock (monotonic). ``flow``
        (who asks) is not used: this batcher serves the oldest sentence first."""
        key, want_attention = BatchKey.of(model_id, options), options.return_attention
        with self._cond:
            if self._stopping:
                raise BatcherStopped("shutting down")
            if self._depth + len(sources) > self.limits.max_queue:
                raise QueueFull(self._retry_after_locked(len(sources)))
            now = self._clock()
            items = [_Item(key, source, want_attention, deadline, now) for source in sources]
            self._groups.setdefault(key, []).extend(items)
            self._set_depth_locked(self._depth + len(items))
            self._cond.notify()
        return [item.future for item in items]

    def cancel(self, futures: Sequence[Future]) -> int:
        """Withdraw queued work (a caller gave up); work already being decoded finishes. Returns the count dropped."""
        targets = set(futures)
        dropped = 0
        with self._cond:
            for key, group in list(self._groups.items()):
                kept = [item for item in group if item.future not in targets]
                for item in group:
                    if item.future in targets and item.future.cancel():
                        dropped += 1
                self._replace_group_locked(key, kept)
            self._set_depth_locked(sum(len(g) for g in self._groups.values()))
        if dropped and self._metrics:
            self._metrics.dropped_sentences.labels("cancelled").inc(dropped)
        return dropped

    def stop(self, timeout: float | None = None) -> None:
        """Take no more work, finish what is queued (up to ``timeout`` s), then fail whatever is left."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            leftovers = [item for group in self._groups.values() for item in group]
            self._groups.clear()
            self._set_depth_locked(0)
        for item in leftovers:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(BatcherStopped("shut down before this sentence was decoded"))
        if leftovers:
            log.warning("shutdown: %d queued sentences were not decoded", len(leftovers))

    # ---- worker -----------------------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch_locked()
            if batch is None:
                return
            self._run(batch)

    def _next_batch_locked(self) -> list[_Item] | None:
        """Block until a batch is due; None when stopping with nothing left."""
        while True:
            self._drop_expired_locked()
            if not self._depth:
                if self._stopping:
                    return None
                self._cond.wait()
                continue
            head = min((group[0] for group in self._groups.values() if group), key=lambda item: item.enqueued)
            group = self._groups[head.key]
            wait = head.enqueued + self.limits.max_wait_s - self._clock()
            if self._stopping or wait <= 0 or self._group_is_full(group):
                batch = self._take_locked(group, head)
                if batch:
                    return batch
                continue
            self._cond.wait(timeout=wait)

    def _group_is_full(self, group: list[_Item]) -> bool:
        tokens = sum(len(item.source) for item in group) * group[0].key.options.beam_size
        return len(group) >= self.limits.max_sentences or tokens >= self.limits.max_tokens

    def _take_locked(self, group: list[_Item], head: _Item) -> list[_Item]:
        """The head plus its group's sentences nearest in length, within the batch limits; marks them running."""
        ordered = sorted(group, key=lambda item: len(item.source))
        low = high = ordered.index(head)  # the batch is ordered[low : high + 1]
        beam, target = head.key.options.beam_size, len(head.source)
        while high - low + 1 < self.limits.max_sentences:
            left = ordered[low - 1] if low > 0 else None
            right = ordered[high + 1] if high + 1 < len(ordered) else None
            if left is None and right is None:
                break
            grow_right = left is None or (right is not None and
                                          len(right.source) - target <= target - len(left.source))
            longest = len((right if grow_right else ordered[high]).source)
            if (high - low + 2) * longest * beam > self.limits.max_tokens:
                break
            low, high = (low, high + 1) if grow_right else (low - 1, high)
        chosen = ordered[low : high + 1]
        taken = set(map(id, chosen))
        self._replace_group_locked(head.key, [item for item in group if id(item) not in taken])
        self._set_depth_locked(self._depth - len(chosen))
        running = [item for item in chosen if item.future.set_running_or_notify_cancel()]
        if len(running) < len(chosen) and self._metrics:
            self._metrics.dropped_sentences.labels("cancelled").inc(len(chosen) - len(running))
        return running

    def _drop_expired_locked(self) -> None:
        now = self._clock()
        for key, group in list(self._groups.items()):
            expired = [item for item in group if item.deadline <= now or item.future.cancelled()]
            if not expired:
                continue
            self._replace_group_locked(key, [item for item in group if item not in expired])
            self._set_depth_locked(self._depth - len(expired))
            for item in expired:
                if item.future.set_running_or_notify_cancel():
                    item.future.set_exception(DeadlineExceeded("deadline passed while queued"))
                    reason = "deadline"
                else:
                    reason = "cancelled"
                if self._metrics:
                    self._metrics.dropped_sentences.labels(reason).inc()

    def _run(self, batch: list[_Item]) -> None:
        key = batch[0].key
        started = self._clock()
        try:
            options = replace(key.options, return_attention=any(item.want_attention for item in batch))
            results = self._runner(key.model_id, options, [item.source for item in batch])
        except Exception as error:  # noqa: BLE001 - the callers get the error; the worker lives on
            log.exception("decoder batch failed (model %s, %d sentences)", key.model_id, len(batch))
            for item in batch:
                item.future.set_exception(error)
            return
        elapsed = self._clock() - started
        self._observe(key, batch, started, elapsed)
        for item, result in zip(batch, results, strict=True):
            item.future.set_result((result, BatchStats(started - item.enqueued, elapsed, len(batch),
                                                       started + elapsed)))

    def _observe(self, key: BatchKey, batch: list[_Item], started: float, elapsed: float) -> None:
        speed = len(batch) / max(elapsed, 1e-6)
        self._sentences_per_s = speed if not self._sentences_per_s else 0.8 * self._sentences_per_s + 0.2 * speed
        if not self._metrics:
            return
        lengths = [len(item.source) for item in batch]
        m = self._metrics
        for item in batch:
            m.queue_wait.observe(started - item.enqueued)
        m.batch_inference.labels(key.model_id).observe(elapsed)
        m.batch_size.labels(key.model_id).observe(len(batch))
        m.padding_ratio.labels(key.model_id).observe(1.0 - sum(lengths) / (len(lengths) * max(lengths)))

    # ---- bookkeeping ------------------------------------------------------------------------------------------

    def _replace_group_locked(self, key: BatchKey, items: list[_Item]) -> None:
        if items:
            self._groups[key] = items
        else:
            self._groups.pop(key, None)

    def _set_depth_locked(self, depth: int) -> None:
        self._depth = depth
        if self._metrics:
            self._metrics.queue_depth.set(depth)

    def _retry_after_locked(self, incoming: int) -> int:
        """Seconds until the queue has likely drained enough to take ``incoming`` more sentences."""
        if not self._sentences_per_s:
            return self.limits.min_retry_after_s
        excess = self._depth + incoming - self.limits.max_queue
        return max(self.limits.min_retry_after_s, min(60, math.ceil(excess / self._sentences_per_s)))
