"""What the engine knows of the request it is working for: whether its client is still there,
and the work an RPC batch has been admitted for as a whole.

The HTTP layer sets these per request (a context variable, so every thread has its own); the
engine reads them before queueing work and while it waits, so a client that has gone costs
nothing more, and a batch of calls counts against the limits like one request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedder.batcher import Reservation

Probe = Callable[[], bool]  # True once the client has gone


@dataclass
class Request:
    gone: Probe | None = None
    # queue space per model held for the calls still to come (an RPC batch; Service.batch)
    reserved: dict[str, Reservation] = field(default_factory=dict)

    def client_gone(self) -> bool:
        return self.gone is not None and self.gone()


_CURRENT: ContextVar[Request | None] = ContextVar("embedder_request", default=None)


def current() -> Request:
    """The request being served in this thread (an empty one outside any request)."""
    return _CURRENT.get() or Request()


def enter(request: Request) -> Token[Request | None]:
    return _CURRENT.set(request)


def leave(token: Token[Request | None]) -> None:
    _CURRENT.reset(token)


@contextmanager
def serving(request: Request) -> Iterator[Request]:
    token = enter(request)
    try:
        yield request
    finally:
        leave(token)
