"""Domain errors. They carry no HTTP or JSON-RPC codes: `embedder.http.errors` maps them."""

from __future__ import annotations

from typing import Any


class EmbedderError(Exception):
    """Base of every error the engine raises on purpose; `message` is safe to show a caller."""

    def __init__(self, message: str, *, param: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details


class InvalidInput(EmbedderError):
    """The caller sent something the engine cannot process (empty, wrong type, bad option)."""


class TooLarge(EmbedderError):
    """The request is over a configured limit (items, characters, bytes)."""


class UnknownModel(EmbedderError):
    """No model, alias or quality level by that name in the active catalog."""


class NotReady(EmbedderError):
    """The model exists but is still downloading or loading; try again shortly."""

    def __init__(self, message: str, *, retry_after: int = 5, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class ModelUnavailable(EmbedderError):
    """The model failed to download, prepare or load; it will not become ready by waiting."""


class DownloadError(EmbedderError):
    """Model files are missing and could not be fetched (offline, Hub unreachable, bad file)."""


class Overloaded(EmbedderError):
    """The worker's queue is full; the caller should retry later."""

    def __init__(self, message: str, *, retry_after: int = 1, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class ClientGone(EmbedderError):
    """The client closed its connection before its work ran: the work is dropped."""
