"""What can go wrong with a translation job, independent of HTTP (the API maps each kind to a status code)."""

from __future__ import annotations


class EngineError(Exception):
    """Base class; ``reason`` is a short machine-readable label (also the metrics label)."""

    reason = "error"


class InvalidJob(EngineError):
    """The job breaks a limit or names languages that are unknown or not served."""

    reason = "invalid"


class Forbidden(EngineError):
    """The API key is missing or unknown (raised once API keys are enforced)."""

    reason = "forbidden"


class NotReady(EngineError):
    """Models are still loading (or failed to load)."""

    reason = "not_ready"


class ShuttingDown(EngineError):
    reason = "shutting_down"


class Overloaded(EngineError):
    """The queue is full; the client should retry after ``retry_after_s`` seconds."""

    reason = "queue_full"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class JobTimeout(EngineError):
    """The job could not be finished before its deadline; its queued work was dropped."""

    reason = "deadline"
