"""The accepted connection's socket: writing to it never waits for the peer.

gunicorn writes an answer with `sendall` on a blocking socket. A client that does not read
(or reads a byte a second) then holds the writing HTTP thread for as long as it likes: 16 of
them sending one large request each held every TCP thread, and `/health` got no answer. Here
a write sends what the kernel takes at once and keeps the rest; the thread is done as soon as
the answer is made, and the worker's poller sends the rest as the client reads it, under a
deadline (embedder.server.http.worker). An answer that fits the socket's buffer, nearly all
of them, goes out in the thread as before. The worker holds what an answer writes (`hold`) and
sends it when the answer is made (`release`): gunicorn writes the header block and the body
separately, two sends (and two wake-ups of the client) where one does.
"""

from __future__ import annotations

import socket
from collections import deque
from typing import Any

JOIN = 64 * 1024  # held writes up to this size in all go out as one send (see `release`)


class Wire(socket.socket):
    __slots__ = ("held", "over_limit", "rest", "whole")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rest: deque[memoryview] = deque()  # what is written but not yet sent, in order
        self.held: list[bytes] | None = None  # what is written while held (see `hold`)
        # The request's body was left unread because it is over the limit (read by the app
        # through `gunicorn.socket`: embedder.server.http.body).
        self.over_limit = False
        # The request a thread parses next is all in memory, read by the worker's poller or by
        # the linger: reading its body never waits on the client (embedder.server.http.body).
        self.whole = False

    @classmethod
    def adopt(cls, sock: socket.socket) -> Wire:
        """`sock`'s connection as a Wire (`sock` is detached and must not be used again)."""
        return cls(sock.family, sock.type, sock.proto, fileno=sock.detach())

    @property
    def pending(self) -> bool:
        """Bytes written that the peer has not taken yet."""
        return bool(self.rest)

    def hold(self) -> None:
        """Keep what is written from now on until `release`."""
        if self.held is None:
            self.held = []

    def release(self) -> None:
        """Send what was held (as `sendall`): in one piece up to JOIN bytes, the pieces as
        they were written beyond (a large body is not copied to save a send); on a socket
        closed meanwhile it is dropped, as a write there would have failed."""
        held, self.held = self.held, None
        if not held or self.fileno() < 0:
            return
        if len(held) > 1 and sum(len(piece) for piece in held) <= JOIN:
            held = [b"".join(held)]
        for piece in held:
            self.sendall(piece)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send what the kernel takes now; keep the rest for `flush`."""
        if self.held is not None:
            self.held.append(bytes(data))
            return
        view = memoryview(data).cast("B")
        if not self.rest:
            view = self._push(view)
            if not view:
                return
        self.rest.append(view if isinstance(data, bytes) else memoryview(bytes(view)))

    def send(self, data: Any, flags: int = 0) -> int:
        """As `sendall` (gunicorn uses it for `100 Continue`): never a short count."""
        self.sendall(data)
        return len(data)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """A file's bytes, through `sendall` (the app sends none, so this stays simple)."""
        file.seek(offset)
        data = file.read(count) if count else file.read()
        self.sendall(data)
        return len(data)

    def flush(self) -> bool:
        """Send what was kept, as far as the kernel takes it; True once all of it is out.
        A connection error (the peer reset) is raised."""
        while self.rest:
            left = self._push(self.rest[0])
            if left:
                self.rest[0] = left
                return False
            self.rest.popleft()
        return True

    def try_send(self, data: bytes) -> bool:
        """Send `data` whole now or not at all (a short control line); False if it did not
        all go out, or the peer has gone."""
        try:
            return not self.rest and not self._push(memoryview(data))
        except OSError:
            return False

    def _push(self, view: memoryview) -> memoryview:
        """What is left of `view` once the kernel takes no more without waiting."""
        while view:
            try:
                sent = super().send(view, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            view = view[sent:]
        return view
