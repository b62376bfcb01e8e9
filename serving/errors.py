"""The service's errors: each carries its HTTP status and the request field at fault."""

from __future__ import annotations


class ServiceError(Exception):
    """An error with an HTTP status and the request field at fault (None: the request)."""

    status = 500

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers of the error response."""
        return {}


class BadInput(ServiceError):
    """The request is invalid (422); ``field`` names the part at fault."""

    status = 422


class NotFound(ServiceError):
    """An unknown user or item (404)."""

    status = 404


class StoreUnavailable(ServiceError):
    """The online store failed or the breaker is open (503)."""

    status = 503


class Overloaded(ServiceError):
    """Every worker is busy and the queue is full (503, with ``Retry-After``)."""

    status = 503

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, None)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class VersionMismatch(ValueError):
    """The ranker, the encoder and the stored embeddings disagree on model_version."""
