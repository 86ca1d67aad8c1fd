"""The machine's GEMM peaks: real ORT sessions, each thread's failure reaching the caller."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from embedder.tools.bench import peaks


class _Failing:
    def __init__(self, fail_on: int) -> None:
        self.calls, self.fail_on = 0, fail_on

    def run(self, outputs: Any, feeds: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("session broke")


def test_a_failing_session_in_a_thread_reaches_the_caller() -> None:
    """A thread that died silently would leave a low figure that reads as the machine's."""
    with pytest.raises(RuntimeError, match="session broke"):
        peaks._time_runs([_Failing(0), _Failing(3)], None, seconds=0.05)


def test_every_session_runs_at_once_on_a_real_gemm() -> None:
    model = peaks._gemm_model("u8u8", 64, 32)
    sessions = [peaks._session(model, 1) for _ in range(2)]
    a = np.random.default_rng(0).integers(0, 256, (16, 64)).astype(np.uint8)
    runs, took = peaks._time_runs(sessions, a, seconds=0.05)
    assert runs >= 4 and took > 0  # at least two timed runs per session
