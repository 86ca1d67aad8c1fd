"""Domain errors. They carry no HTTP or JSON-RPC codes: `embedder.server.http.errors` maps them."""

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


class NothingToRead(InvalidInput):
    """A text with nothing a model reads: empty, whitespace only, or only characters the
    tokenizer drops (control and format characters such as U+0000 and U+200B, lone combining
    marks). One rule and one message, whether it is caught before tokenising (empty,
    whitespace) or after; `index` is its place among the texts of one call."""

    def __init__(self, what: str, *, param: str, index: int = 0) -> None:
        super().__init__(
            f"{what} has nothing to read: it is empty, or only whitespace and characters the "
            "tokenizer drops (control, zero-width and other invisible characters)",
            param=param,
        )
        self.index = index


class ConfigError(EmbedderError):
    """A setting or a catalog is wrong: the service cannot start as configured. Not a request
    error: it stops a start (or a CLI command) with its message, never becomes a 4xx."""


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
    """The model failed to download, prepare or load. Waiting mends it only when a download is
    retried: then `retry_after` says in how many seconds."""

    def __init__(self, message: str, *, retry_after: int | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class BrokenModel(EmbedderError):
    """The model's output held NaN or Inf: its weights (or its graph) are damaged. Never an
    answer; the model is marked failed, and waiting does not mend it."""


class DownloadError(EmbedderError):
    """Model files are missing and could not be fetched (offline, Hub unreachable, bad file)."""


class Overloaded(EmbedderError):
    """The worker's queue is full; the caller should retry later."""

    def __init__(self, message: str, *, retry_after: int = 1, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class TimedOut(Overloaded):
    """The model did not finish an admitted request within the caller's bound (a stuck or far
    slower run than admission estimated); answered like overload, so the caller retries."""


class ClientGone(EmbedderError):
    """The client closed its connection before its work ran: the work is dropped."""
