"""An in-memory LRU cache of sentence translations, so a repeated sentence is answered without decoding.

An entry is one source sentence's n-best list (``list[Translation]``), keyed by everything that decides it:

- the model: its id and its ``fingerprint`` (the SHA-256 of its card, which lists the SHA-256 of every file it
  ships, plus which decoder is loaded, fp32 or int8), so a replaced model never answers from an old entry;
- the sentence as the model sees it: its SentencePiece ids (after the tokenizer's NFKC normalization,
  whitespace collapsing and truncation). Equal ids give equal outputs, so sentences that differ only in what
  the tokenizer normalizes away share an entry;
- every search option: beam size, n-best, length penalty, the length limits and whether attention is kept
  (all fields of ``SearchOptions``, so an option added there is keyed without a change here).

The cache holds at most ``capacity`` entries (``MT_CACHE_SIZE``) and about ``max_bytes`` of translations
(``MT_CACHE_MAX_MB``), evicting the least recently used. Values are deep-copied on the way in and on the way
out: a caller can change what it got without changing what another caller gets. One lock guards the map; the
copies are made outside it. Hits and misses are
counted per model (``mt_cache_hits_total``, ``mt_cache_misses_total``); nothing about the text reaches a
metric label or a log line.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from inference.search import SearchOptions
from inference.translator import Translation
from service.metrics import Metrics


class CachedModel(Protocol):
    """What a cache key needs of a served model (``service.registry.LoadedModel`` has it)."""

    id: str

    @property
    def fingerprint(self) -> str: ...


@dataclass(frozen=True)
class CacheKey:
    model_id: str
    fingerprint: str
    source: bytes  # the sentence's token ids as int32 bytes: compact and hashable
    options: tuple  # dataclasses.astuple(SearchOptions)


def cache_key(model: CachedModel, source_ids: list[int], options: SearchOptions) -> CacheKey:
    """The key of one sentence (its ids, </s> included) decoded by ``model`` with ``options``."""
    return CacheKey(model.id, model.fingerprint, np.asarray(source_ids, dtype=np.int32).tobytes(),
                    dataclasses.astuple(options))


class TranslationCache:
    """Thread-safe LRU map ``CacheKey -> n-best translations`` (``capacity`` 0 = off).

    Bounded twice: at most ``capacity`` entries and about ``max_bytes`` of translations (``entry_bytes``), so
    long sentences with attention cannot make a full cache outgrow its memory budget; the least recently used
    entries go first, and an entry larger than the whole budget is not stored.
    """

    def __init__(self, capacity: int, max_bytes: int = 64 << 20, metrics: Metrics | None = None) -> None:
        if capacity < 0 or max_bytes < 0:
            raise ValueError("capacity and max_bytes must be >= 0")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._metrics = metrics
        self._entries: OrderedDict[CacheKey, tuple[list[Translation], int]] = OrderedDict()  # oldest use first
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.capacity > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        with self._lock:  # a put holds one entry too many between its insert and its eviction
            return len(self._entries)

    @property
    def bytes(self) -> int:
        """The estimated size of the stored translations."""
        with self._lock:
            return self._bytes

    def get(self, key: CacheKey) -> list[Translation] | None:
        """A copy of the entry (now the most recently used), or None; counts a hit or a miss."""
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        if self._metrics is not None:
            counter = self._metrics.cache_misses if entry is None else self._metrics.cache_hits
            counter.labels(key.model_id).inc()
        return None if entry is None else copy.deepcopy(entry[0])

    def put(self, key: CacheKey, nbest: list[Translation]) -> None:
        """Store a copy of ``nbest``, evicting the least recently used entries beyond the bounds."""
        if not self.enabled:
            return
        stored = copy.deepcopy(nbest)
        size = entry_bytes(stored)
        if size > self.max_bytes:
            return
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= previous[1]
            self._entries[key] = (stored, size)
            self._bytes += size
            while len(self._entries) > self.capacity or self._bytes > self.max_bytes:
                self._bytes -= self._entries.popitem(last=False)[1][1]
            self._observe_locked()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self._observe_locked()

    def _observe_locked(self) -> None:
        if self._metrics is not None:  # under the lock, so concurrent puts cannot set stale values
            self._metrics.cache_entries.set(len(self._entries))
            self._metrics.cache_bytes.set(self._bytes)


def entry_bytes(value: object, seen: set[int] | None = None) -> int:
    """Approximate memory of a cached value: its objects' ``sys.getsizeof`` (array buffers included), each object
    counted once; walks dataclasses, lists, tuples and dicts."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)  # a numpy array that owns its data includes its buffer here
    if isinstance(value, np.ndarray) and value.base is not None:
        size += value.nbytes
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        size += sum(entry_bytes(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    elif isinstance(value, (list, tuple)):
        size += sum(entry_bytes(item, seen) for item in value)
    elif isinstance(value, dict):
        size += sum(entry_bytes(k, seen) + entry_bytes(v, seen) for k, v in value.items())
    return size
