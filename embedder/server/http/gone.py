"""Knowing, per request, whether its client has closed the connection.

Work queued for a client that has gone is wasted: a batch of calls whose sockets were all
closed at once still ran every text. Each request gets a probe of its socket (a peek that
never blocks) which the engine checks before it queues work and while the work waits.
"""

from __future__ import annotations

import socket
from functools import partial
from typing import Any

import falcon

from embedder import work

_PEEK = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)  # once: or-ing the flags runs enum code


def closed(sock: socket.socket) -> bool:
    """True once the peer has closed (or reset) the connection. A client that shuts down only
    its sending side reads as gone too, which HTTP clients do not do while they wait. Any
    other answer (nothing to read yet, not a connected socket) means not gone."""
    try:
        return sock.recv(1, _PEEK) == b""
    except ConnectionError:  # reset or aborted by the peer
        return True
    except OSError:  # nothing to read yet, or not a connection one can ask: not gone
        return False


class ClientWatch:
    """Falcon middleware: the engine's view of the current request (`embedder.work`)."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        sock = req.env.get("gunicorn.socket")
        probe = partial(closed, sock) if isinstance(sock, socket.socket) else None
        req.context.work_token = work.enter(work.Request(gone=probe))

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        token = getattr(req.context, "work_token", None)
        if token is not None:
            work.leave(token)
            req.context.work_token = None
