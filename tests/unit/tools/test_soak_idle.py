"""The soak's idle RSS is read once the workers' memory has stopped falling: a reading taken
while the idle trim still runs (or before it began, on a loaded machine) counted memory the
worker was about to hand back, and a 60 s soak once read that as 11 % growth."""

from __future__ import annotations

from typing import Any

import pytest

from embedder.tools import soak_load

MIB = 1 << 20


def _readings(monkeypatch: pytest.MonkeyPatch, mib: list[float]) -> None:
    left = list(mib)

    def read(service: Any) -> dict[Any, int] | None:
        return {123: int(left.pop(0) * MIB)} if left else None

    monkeypatch.setattr(soak_load, "_read", read)


def test_the_idle_reading_waits_for_the_trim_to_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    _readings(monkeypatch, [589.0, 560.0, 531.0, 530.5, 400.0])
    waits: list[float] = []
    out: list[dict[str, Any]] = []
    soak_load.idle_sample(object(), 0.0, out, waits.append)  # type: ignore[arg-type]
    assert [s["rss"] / MIB for s in out] == [530.5]
    assert out[0]["idle"] and out[0]["pid"] == 123
    assert waits == [soak_load.IDLE_SETTLE] + [soak_load.SETTLE_STEP] * 3


def test_a_steady_reading_is_taken_after_one_more_look(monkeypatch: pytest.MonkeyPatch) -> None:
    _readings(monkeypatch, [530.0, 531.0, 200.0])
    out: list[dict[str, Any]] = []
    soak_load.idle_sample(object(), 0.0, out, lambda s: None)  # type: ignore[arg-type]
    assert [s["rss"] / MIB for s in out] == [531.0], "growth is never waited away"


def test_the_wait_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    _readings(monkeypatch, [600.0 - 10 * i for i in range(50)])
    monkeypatch.setattr(soak_load, "SETTLE_BOUND", 0.0)
    out: list[dict[str, Any]] = []
    soak_load.idle_sample(object(), 0.0, out, lambda s: None)  # type: ignore[arg-type]
    assert [s["rss"] / MIB for s in out] == [600.0]
