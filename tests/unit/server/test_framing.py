"""How the worker's poller frames a request from its bytes: the header block's framing, and
the end of a chunked body found as its bytes arrive, checked against gunicorn's own parser."""

from __future__ import annotations

import pytest
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser
from hypothesis import given, settings
from hypothesis import strategies as st

from embedder.server.http.framing import (
    Body,
    Chunks,
    Malformed,
    OverLimit,
    read_head,
    read_lines,
)

NEXT = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    ("head", "body", "length"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", Body.NONE, 0),
        (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", Body.NONE, 0),
        (b"POST / HTTP/1.1\r\ncontent-length:  12 \r\n\r\n", Body.LENGTH, 12),
        (b"POST / HTTP/1.0\nContent-Length: 3\n\n", Body.LENGTH, 3),
        (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", Body.UNKNOWN, 0),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", Body.UNKNOWN, 0),
        (b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", Body.UNKNOWN, 0),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", Body.CHUNKED, 0),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n", Body.CHUNKED, 0),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", Body.UNKNOWN, 0),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Body.UNKNOWN, 0),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Body.UNKNOWN, 0),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            Body.UNKNOWN,
            0,
        ),
        (b"POST / HTTP/1.1\r\nExpect: something\r\nContent-Length: 5\r\n\r\n", Body.UNKNOWN, 0),
    ],
)
def test_the_framing_of_a_header_block(head: bytes, body: Body, length: int) -> None:
    framing = read_head(head)
    assert (framing.body, framing.length) == (body, length)
    assert framing.head == head and not framing.expects_continue


def test_100_continue_is_taken_out_of_an_http_1_1_block_only() -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nexpect: 100-Continue\r\nContent-Length: 5\r\n\r\n"
    framing = read_head(head)
    assert framing.expects_continue and (framing.body, framing.length) == (Body.LENGTH, 5)
    assert framing.head == b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
    old = head.replace(b"HTTP/1.1", b"HTTP/1.0")  # RFC 9110: ignored in HTTP/1.0
    assert read_head(old).head == old and not read_head(old).expects_continue


NAMES = [
    b"Content-Length",
    b"content-length",
    b"CONTENT-LENGTH",
    b" Content-Length",
    b"Content-Length ",
    b"Transfer-Encoding",
    b"Expect",
    b"Host",
    b"X-Content-Length",
    b"User-Agent",
]
VALUES = [b"5", b" 12 ", b"0", b"007", b"-1", b"0x10", b"", b"chunked", b"100-continue"]
VALUES += [b"expectation", b"content-length: 3", b"1 2", b"\xb2"]


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    target = draw(st.sampled_from([b"/v1/embeddings", b"/content-length:9"]))
    lines = [b"POST " + target + b" " + version]
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from(NAMES))
        sep = draw(st.sampled_from([b":", b": ", b" :"]))
        lines.append(name + sep + draw(st.sampled_from(VALUES)))
    return eol.join(lines) + eol + eol


@settings(max_examples=1000, deadline=None)
@given(header_blocks())
def test_the_quick_reading_of_a_header_block_is_the_line_by_line_one(head: bytes) -> None:
    """read_head reads nearly every block without splitting it into lines; whatever the
    block, the framing is the one read line by line."""
    assert read_head(head) == read_lines(head)


CHUNKED = [
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5;ext=1;other\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"A\r\n0123456789\r\n0\r\nTrailer-One: 1\r\nTrailer-Two: 2\r\n\r\n",
    b"1\r\n\n\r\n0\r\n\r\n",  # a data byte that is a line feed
    b"0\r\n\r\n",
]


def _gunicorn_end(head: bytes, body: bytes) -> int:
    """Where gunicorn's parser says this request ends: the bytes it leaves are the next
    request's."""
    parser = RequestParser(Config(), [head + body + NEXT], ("127.0.0.1", 1))
    request = next(parser)
    while request.body.read(8192):
        pass
    return len(head + body + NEXT) - len(parser.unreader.take_buffered() + _rest(parser))


def _rest(parser: RequestParser) -> bytes:
    out = b""
    while chunk := parser.unreader.read():
        out += chunk
    return out


@pytest.mark.parametrize("body", CHUNKED)
def test_a_chunked_body_ends_where_gunicorn_says_in_any_pieces(body: bytes) -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert _gunicorn_end(head, body) == len(head + body)
    for step in (1, 2, 7, len(body) + len(NEXT)):
        chunks, buf, seen = Chunks(len(head), 1 << 20), bytearray(head), None
        wire = body + NEXT
        for i in range(0, len(wire), step):
            buf += wire[i : i + step]
            seen = chunks.end(buf)
            if seen is not None:
                break
        assert seen == len(head + body), step


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",  # not a size
        b"\r\nhello\r\n0\r\n\r\n",  # no size
        b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the data
        b"5" * 5000,  # a size line that never ends
    ],
)
def test_broken_framing_is_malformed(body: bytes) -> None:
    with pytest.raises(Malformed):
        Chunks(0, 1 << 20).end(body)


def test_chunks_over_the_limit_are_known_before_they_arrive() -> None:
    with pytest.raises(OverLimit):
        Chunks(0, 100).end(b"40\r\n" + b"x" * 64 + b"\r\n41\r\n")
    # Framing counts too: tiny chunks with long extensions cannot grow the body unbounded.
    tiny = b"1;" + b"e" * 1000 + b"\r\nx\r\n"
    with pytest.raises(OverLimit):
        Chunks(0, 1000).end(tiny * 3)
