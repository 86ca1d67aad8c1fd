"""A warning anyone can trigger (a malformed request) is logged at most once per interval,
and what was left out is counted."""

from __future__ import annotations

import logging

import pytest

from embedder.server.http.access import Throttled


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_is_one_line_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    throttled = Throttled(logging.getLogger("test.throttled"), "bad requests", 10.0, clock)
    with caplog.at_level(logging.WARNING, "test.throttled"):
        for i in range(1000):
            throttled.warning("bad request %d", i)
            throttled.flush()  # what the worker does on every wake: nothing to say yet
        assert [r.getMessage() for r in caplog.records] == ["bad request 0"]
        clock.now += 10.0
        throttled.warning("bad request %d", 1000)
        throttled.flush()
        assert caplog.records[-1].getMessage() == (
            "bad request 1000 (999 more since the last such line, not logged)"
        )
        for i in range(5):
            throttled.warning("bad request %d", i)
        clock.now += 10.0
        throttled.flush()  # the flood stopped: its count is still said, once
        throttled.flush()
        assert [r.getMessage() for r in caplog.records][2:] == ["5 more bad requests, not logged"]
