"""API keys and per-key rate limits. Nothing here knows about HTTP: the API maps the errors to 401/403/429.

Keys come from ``MT_API_KEYS`` and/or ``MT_API_KEYS_FILE``; with neither, no key is needed and nothing is
limited. A key must be at least 16 characters with enough variety (start-up refuses guessable ones).
Only the SHA-256 digest of each key is kept; logs name a key by a keyed hash (HMAC with
``MT_KEY_FINGERPRINT_SECRET``, or a random per-process secret), so a log reader cannot test guesses. A presented key is hashed and compared with *every*
stored digest by ``hmac.compare_digest`` (no early exit), so the time a check takes does not depend on which
key matched, on how much of a key was right, or on its length.

Each key has a token bucket: ``burst`` requests at once, refilled at ``per_minute / 60`` tokens per second.
Buckets exist only for configured keys, so their number is bounded (unknown keys never get one).

``ApiKeys`` re-reads ``MT_API_KEYS_FILE`` when it changes (a rotated Kubernetes Secret, an edited file), so
keys can be added and revoked without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.config import Settings
from service.errors import Forbidden, RateLimited, Unauthorized

log = logging.getLogger(__name__)


class ApiKeyConfigError(ValueError):
    """MT_API_KEYS or MT_API_KEYS_FILE cannot be used (the message never contains a key)."""


MIN_KEY_LENGTH = 16
MIN_KEY_BITS = 64  # length x log2(the character classes it draws from)
_CHARACTER_CLASSES = ((frozenset("abcdefghijklmnopqrstuvwxyz"), 26), (frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), 26),
                      (frozenset("0123456789"), 10))
_PROCESS_SECRET = os.urandom(32)
KEY_ADVICE = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def weakness(secret: str) -> str | None:
    """Why ``secret`` is too weak to be an API key, or None. (The message never quotes the key.)"""
    if len(secret) < MIN_KEY_LENGTH:
        return f"is shorter than {MIN_KEY_LENGTH} characters"
    pool = sum(size for characters, size in _CHARACTER_CLASSES if characters & set(secret))
    pool += 33 if any(not c.isalnum() for c in secret) else 0  # printable ASCII punctuation
    if len(secret) * math.log2(max(pool, 2)) < MIN_KEY_BITS or len(set(secret)) < max(6, len(secret) // 4):
        return "is guessable (too few distinct characters)"
    return None


@dataclass(frozen=True)
class ApiKey:
    id: str  # "key-" + 8 hex digits of a keyed hash of the key: names it in logs without revealing it
    digest: bytes
    per_minute: float  # 0 = no limit


class TokenBucket:
    def __init__(self, capacity: float, per_second: float, now: float) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.tokens = capacity
        self.updated = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0.0: there is one), without taking it."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.per_second

    def spend(self, amount: float, now: float) -> float:
        """Spend ``amount`` if anything is left, even more than is left (the debt delays what comes next): 0.0,
        or the seconds until something is left again."""
        self._refill(now)
        if self.tokens > 0:
            self.tokens -= amount
            return 0.0
        return -self.tokens / self.per_second + 1e-3

    def take(self, now: float) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there will be one."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.per_second


class KeyRing:
    def __init__(self, keys: list[ApiKey], burst: int, clock: Callable[[], float] = time.monotonic,
                 work_per_minute: float = 0) -> None:
        if not keys:
            raise ApiKeyConfigError("no API keys")
        self.keys = keys
        self.work_per_minute = work_per_minute
        self._clock = clock
        now = clock()
        self._buckets = {key.id: TokenBucket(burst, key.per_minute / 60, now) for key in keys if key.per_minute}
        # Work (source tokens x beam size decoded): one minute's worth may be spent at once.
        self._work_buckets = {key.id: TokenBucket(work_per_minute, work_per_minute / 60, now)
                              for key in keys} if work_per_minute else {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing | None:
        """The configured keys, or None when no key is configured (then the API is open)."""
        entries = [(key, settings.rate_limit_per_minute) for key in settings.api_keys]
        if settings.api_keys_file is not None:
            entries += _read_keys_file(settings.api_keys_file, settings.rate_limit_per_minute)
        if not entries:
            return None
        keys: dict[bytes, ApiKey] = {}
        fingerprint_secret = (settings.key_fingerprint_secret or "").encode() or _PROCESS_SECRET
        for number, (secret, per_minute) in enumerate(entries, 1):
            if not secret.isascii() or not secret.isprintable() or " " in secret:
                raise ApiKeyConfigError(f"API key number {number} has characters other than printable ASCII")
            problem = weakness(secret)
            if problem:
                raise ApiKeyConfigError(f"API key number {number} {problem}; {KEY_ADVICE}")
            digest = _digest(secret)
            fingerprint = hmac.new(fingerprint_secret, secret.encode(), hashlib.sha256).hexdigest()[:8]
            keys[digest] = ApiKey("key-" + fingerprint, digest, per_minute)  # a repeated key: the last wins
        return cls(list(keys.values()), settings.rate_limit_burst,
                   work_per_minute=settings.rate_limit_work_per_minute)

    def keep_buckets_of(self, previous: KeyRing) -> None:
        """Carry over the buckets of keys that ``previous`` also had at the same rate: a reload must not hand
        every client a fresh burst."""
        rates = {key.id: key.per_minute for key in previous.keys}
        for key in self.keys:
            if key.id in self._buckets and rates.get(key.id) == key.per_minute:
                self._buckets[key.id] = previous._buckets[key.id]
            if key.id in self._work_buckets and previous.work_per_minute == self.work_per_minute:
                self._work_buckets[key.id] = previous._work_buckets.get(key.id, self._work_buckets[key.id])

    def authenticate(self, presented: str | None) -> ApiKey:
        """The key matching ``presented``; raises Unauthorized (none given) or Forbidden (no match)."""
        if not presented:
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>' (or api_key)")
        digest = _digest(presented)
        match = None
        for key in self.keys:  # every key, every time: no early exit
            if hmac.compare_digest(digest, key.digest):
                match = key
        if match is None:
            raise Forbidden("invalid API key")
        return match

    def admit(self, key: ApiKey) -> None:
        """Count one request against ``key``'s rate; raises RateLimited when its bucket is empty."""
        bucket = self._buckets.get(key.id)
        if bucket is None:
            return
        with self._lock:
            wait = bucket.take(self._clock())
        if wait:
            raise RateLimited(f"rate limit of {key.per_minute:g} requests per minute exceeded for this API key",
                              max(1, math.ceil(wait)))

    def charge_work(self, key: ApiKey, work: int) -> None:
        """Count the work a request is about to decode (source tokens x beam size) against ``key``'s work rate;
        raises RateLimited while the key is in debt from earlier requests."""
        bucket = self._work_buckets.get(key.id)
        if bucket is None or not work:
            return
        with self._lock:
            wait = bucket.spend(work, self._clock())
        if wait:
            raise RateLimited(f"work rate limit of {self.work_per_minute:g} per minute (source tokens x beam size of "
                              "the sentences decoded) exceeded for this API key", max(1, math.ceil(wait)))


class AuthFailureLimiter:
    """Per client address, failed authentications (401/403) take tokens from a bucket of ``burst``, refilled
    at ``per_minute``; an address with an empty bucket is refused (429) before its key is even checked, so
    guessing keys is slow. At most ``max_addresses`` buckets are kept (the least recently failed go first)."""

    def __init__(self, per_minute: float, burst: int = 10, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self.max_addresses = max_addresses
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, address: str) -> None:
        if not self.per_minute:
            return
        with self._lock:
            bucket = self._buckets.get(address)
            wait = bucket.wait(self._clock()) if bucket is not None else 0.0
        if wait:
            raise RateLimited("too many requests with a missing or invalid API key from this address",
                              max(1, math.ceil(wait)))

    def failed(self, address: str) -> None:
        if not self.per_minute:
            return
        with self._lock:
            now = self._clock()
            bucket = self._buckets.pop(address, None) or TokenBucket(self.burst, self.per_minute / 60, now)
            bucket.take(now)
            self._buckets[address] = bucket
            while len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)


class ApiKeys:
    """The configured key ring, rebuilt when ``MT_API_KEYS_FILE`` changes (checked at most once per
    ``check_every_s``, by one ``stat``). A file that no longer parses, or is gone, keeps the previous keys and
    logs an error: a bad edit must neither lock every client out nor open the API."""

    def __init__(self, ring: KeyRing, settings: Settings, check_every_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ring = ring
        self._settings = settings
        self._check_every_s = check_every_s
        self._clock = clock
        self._next_check = clock() + check_every_s
        self._file_version = self._version()
        self.failures = AuthFailureLimiter(settings.auth_failures_per_minute, clock=clock)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs) -> ApiKeys | None:
        """None when no key is configured (then the API is open); raises ApiKeyConfigError on a bad setting."""
        ring = KeyRing.from_settings(settings)
        return None if ring is None else cls(ring, settings, **kwargs)

    def current(self) -> KeyRing:
        now = self._clock()
        if self._settings.api_keys_file is not None and now >= self._next_check:
            self._next_check = now + self._check_every_s
            version = self._version()
            if version != self._file_version:
                self._file_version = version
                self._reload()
        return self.ring

    def _version(self) -> tuple[int, int, int] | None:
        """What changes when the file does; stat follows symlinks, so a Secret's swapped link counts."""
        if self._settings.api_keys_file is None:
            return None
        try:
            stat = os.stat(self._settings.api_keys_file)
        except OSError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def _reload(self) -> None:
        try:
            ring = KeyRing.from_settings(self._settings)
        except ApiKeyConfigError as error:
            log.error("API keys not reloaded, keeping the previous %d: %s", len(self.ring.keys), error)
            return
        assert ring is not None  # the file is set, and from_settings refuses a file without keys
        ring.keep_buckets_of(self.ring)
        self.ring = ring
        log.info("API keys reloaded", extra={"keys": len(ring.keys)})


def _digest(secret: str) -> bytes:
    # surrogatepass: a JSON "\ud800" escape must be compared (and fail), not crash the encoder
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def _read_keys_file(path: Path, default_per_minute: float) -> list[tuple[str, float]]:
    """``KEY`` or ``KEY REQUESTS_PER_MINUTE`` per line; blank lines and ``#`` comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ApiKeyConfigError(f"cannot read MT_API_KEYS_FILE {path}: {error}") from error
    entries = []
    for number, line in enumerate(lines, 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2:
            raise ApiKeyConfigError(f"{path} line {number}: expected 'KEY [REQUESTS_PER_MINUTE]'")
        try:
            per_minute = float(fields[1]) if len(fields) == 2 else default_per_minute
        except ValueError:
            per_minute = -1.0
        if not per_minute >= 0 or math.isinf(per_minute):
            raise ApiKeyConfigError(f"{path} line {number}: the rate must be a number of requests per minute >= 0")
        entries.append((fields[0], per_minute))
    if not entries:
        raise ApiKeyConfigError(f"MT_API_KEYS_FILE {path} holds no key")
    return entries
