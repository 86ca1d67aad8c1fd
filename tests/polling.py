"""Waiting on observable state, never on the clock: tests poll what they need to see, with a
bound generous enough for a slow or loaded machine, and fail saying what they saw."""

from __future__ import annotations

import time
from collections.abc import Callable

# A bound, not an expectation: a test waits this long only when something is wrong.
PATIENCE = 120.0


def wait_until(
    what: str,
    check: Callable[[], object],
    timeout: float = PATIENCE,
    step: float = 0.05,
    tolerate: tuple[type[BaseException], ...] = (),
) -> float:
    """Poll `check` until it returns something true; the seconds it took. `tolerate` names
    exceptions that mean "not yet" (e.g. OSError while a listener is between workers)."""
    t0 = time.monotonic()
    last: object = None
    while True:
        try:
            last = check()
            if last:
                return time.monotonic() - t0
        except tolerate as exc:
            last = exc
        if time.monotonic() - t0 > timeout:
            raise AssertionError(
                f"{what}: still not the case after {timeout:.0f} s (last: {last!r})"
            )
        time.sleep(step)
