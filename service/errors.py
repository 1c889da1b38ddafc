"""What can go wrong with a translation job, independent of HTTP (the API maps each kind to a status code)."""

from __future__ import annotations


class EngineError(Exception):
    """Base class; ``reason`` is a short machine-readable label (also the metrics label)."""

    reason = "error"


class InvalidJob(EngineError):
    """The job breaks a limit or names languages that are unknown or not served."""

    reason = "invalid"


class ConfidenceUnavailable(InvalidJob):
    """Confidence or abstention was asked of a model whose card carries no confidence calibration."""

    reason = "no_confidence"


class Unauthorized(EngineError):
    """API keys are required and the request carries none (or a malformed Authorization header)."""

    reason = "unauthorized"


class Forbidden(EngineError):
    """The request carries an API key that is not one of the configured keys."""

    reason = "forbidden"


class RetryLater(EngineError):
    """Refused for now; the client may retry after ``retry_after_s`` seconds (the Retry-After header)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(RetryLater):
    """The API key used up its request rate."""

    reason = "rate_limited"


class NotReady(EngineError):
    """Models are still loading (or failed to load)."""

    reason = "not_ready"


class ShuttingDown(EngineError):
    reason = "shutting_down"


class Overloaded(RetryLater):
    """The queue is full."""

    reason = "queue_full"


class JobTimeout(EngineError):
    """The job could not be finished before its deadline; its queued work was dropped."""

    reason = "deadline"


class BadModelOutput(EngineError):
    """The model's output for one of the job's sentences is unusable (no hypothesis, or a NaN/inf score).
    Only this job fails; other jobs in the same batch are answered."""

    reason = "bad_model_output"
