"""Where a request ends, worked out from its bytes as they arrive, before a thread sees it.

The worker's poller reads every request whole (embedder.server.http.worker): for that it must
know, from the header block, how the body is framed (none, a Content-Length, chunked) and,
for a chunked body, find the end of the last chunk as the bytes come in. It only frames; the
request is parsed by gunicorn in the thread, from the bytes the poller hands over. Anything
the poller does not recognise as a framing it can read is handed over as a header block
alone, which gunicorn refuses (501, 400, 417) without reading further.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

MAX_HEADER_BLOCK = 64 * 1024  # a header block beyond this is refused (431)
RECV_BYTES = 256 * 1024
_MAX_CHUNK_LINE = 4096  # a chunk-size line (with its extensions) or a trailer line


def header_end(buf: bytes | bytearray) -> int:
    """Where the header block ends (just after its blank line), or -1."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := buf.find(sep)) >= 0]
    return min(ends) if ends else -1


class Body(enum.Enum):
    NONE = "none"
    LENGTH = "length"  # Content-Length
    CHUNKED = "chunked"
    UNKNOWN = "unknown"  # a framing gunicorn refuses from the header block alone


class Head(NamedTuple):
    """What the poller needs of a header block (a tuple: made for every request, at half a
    frozen dataclass's cost)."""

    head: bytes  # the block, without the Expect line it answers itself
    body: Body
    length: int = 0  # for Body.LENGTH
    expects_continue: bool = False  # HTTP/1.1 `Expect: 100-continue` (taken out of `head`)


def read_head(head: bytes | bytearray) -> Head:
    """The framing of the request whose header block is `head` (up to its blank line). An
    `Expect: 100-continue` of HTTP/1.1 is taken out of the block: the poller answers it."""
    block = bytes(head)
    return _plain(block) or read_lines(block)


_LENGTH_LINE = b"\ncontent-length:"


def _plain(block: bytes) -> Head | None:
    """The framing of nearly every request, found without taking the block apart line by
    line (every kept-alive request is framed twice, here and by gunicorn): no mention of
    Transfer-Encoding or Expect anywhere, and `content-length` nowhere or once, at the start
    of a line and followed by its colon, with a value of digits. None for anything else,
    which `read_lines` reads; the answer is the same (tests/unit/server/test_framing.py)."""
    lower = block.lower()
    if b"transfer-encoding" in lower or b"expect" in lower:
        return None
    mentions = lower.count(b"content-length")
    if not mentions:
        return Head(block, Body.NONE)
    start = lower.find(_LENGTH_LINE) + len(_LENGTH_LINE)
    if mentions > 1 or start < len(_LENGTH_LINE):
        return None
    end = lower.find(b"\n", start)
    value = block[start : end if end >= 0 else len(block)].strip()
    if not value.isdigit():
        return None
    length = int(value)
    return Head(block, Body.LENGTH, length) if length else Head(block, Body.NONE)


def read_lines(head: bytes | bytearray) -> Head:
    """`read_head`, line by line: any header block."""
    lines = bytes(head).split(b"\n")
    http11 = lines[0].rstrip(b"\r").endswith(b" HTTP/1.1")
    length: int | None = None
    codings: list[bytes] = []
    expect: list[int] = []
    unknown = False
    for i, line in enumerate(lines[1:], 1):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            unknown |= length is not None or not value.isdigit()
            length = int(value) if value.isdigit() else 0
        elif name == b"transfer-encoding":
            codings += [c.strip().lower() for c in value.split(b",")]
        elif name == b"expect":
            if value.lower() == b"100-continue":
                expect.append(i)
            else:
                unknown = True  # gunicorn answers 417
    block = bytes(head)
    answered = http11 and bool(expect)
    if answered:
        block = b"\n".join(line for i, line in enumerate(lines) if i not in expect)
    if codings:
        chunked = http11 and codings[-1] == b"chunked" and length is None and not unknown
        return Head(block, Body.CHUNKED if chunked else Body.UNKNOWN, 0, answered)
    if unknown:
        return Head(block, Body.UNKNOWN, 0, answered)
    if not length:
        return Head(block, Body.NONE, 0, answered)
    return Head(block, Body.LENGTH, length, answered)


class Malformed(Exception):
    """The chunked framing is broken: where the request ends cannot be known."""


class OverLimit(Exception):
    """The chunks announce more than the body limit."""


class Chunks:
    """Finds the end of a chunked body as its bytes arrive, checking the sizes the chunks
    announce against `limit`, and the body as sent (framing included) against twice that.
    Each call goes on from where the last one stopped."""

    def __init__(self, start: int, limit: int) -> None:
        self.pos = start  # the next byte not yet looked at
        self.limit = limit
        self.raw_end = start + self.raw_limit(limit)
        self.total = 0  # data bytes announced so far
        self.data_left = 0  # of the current chunk, with its CRLF
        self.trailers = False

    @staticmethod
    def raw_limit(limit: int) -> int:
        """The most bytes a chunked body within `limit` may take on the wire."""
        return 2 * limit

    def end(self, buf: bytes | bytearray) -> int | None:
        """Where the message ends in `buf` (just after the last trailer line), or None while
        it has not all arrived. Raises Malformed or OverLimit."""
        while True:
            if self.pos > self.raw_end:
                raise OverLimit(self.pos)
            if self.data_left:
                step = min(self.data_left, len(buf) - self.pos)
                self.pos += step
                self.data_left -= step
                if self.data_left:
                    return None
                if buf[self.pos - 2 : self.pos] != b"\r\n":
                    raise Malformed("a chunk is not followed by CRLF")
            nl = buf.find(b"\n", self.pos, self.pos + _MAX_CHUNK_LINE + 1)
            if nl < 0:
                if len(buf) - self.pos > _MAX_CHUNK_LINE:
                    raise Malformed("a chunk-size or trailer line is too long")
                return None
            line = bytes(buf[self.pos : nl]).rstrip(b"\r")
            self.pos = nl + 1
            if self.trailers:
                if not line:
                    return self.pos
                continue
            size = line.split(b";", 1)[0].strip()
            if not size or size.strip(b"0123456789abcdefABCDEF"):
                raise Malformed(f"invalid chunk size {size[:20]!r}")
            n = int(size, 16)
            if n == 0:
                self.trailers = True
                continue
            self.total += n
            if self.total > self.limit:
                raise OverLimit(self.total)
            self.data_left = n + 2
