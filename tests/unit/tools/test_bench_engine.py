"""The benchmark's limit runs the corpus as one plan, its sub-batches pulled by a thread per
engine (as a worker's runners pull from the micro-batcher)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from embedder.catalog import STARTER
from embedder.encoder import TextEncoder
from embedder.planning import RunLimits
from embedder.service import Service
from embedder.sessions import SessionConfig, open_session
from embedder.settings import Settings
from embedder.tokens import Tokenized, load_tokenizer
from embedder.tools.bench.engine import (
    _parallel,
    _pooled,
    limit,
    lone_engine,
    measure,
    round_rate,
    single_times,
)
from embedder.tools.corpus import corpus
from tests.models import paraphrase_onnx, tokenizer_json


class Spy(TextEncoder):
    """Records the rows each thread ran; fails on request."""

    def __init__(self, *args: object, fail: bool = False) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.fail = fail
        self.ran: list[tuple[str, list[int]]] = []

    def run_rows(self, tok: Tokenized, rows: np.ndarray) -> np.ndarray:
        if self.fail:
            raise RuntimeError("the session failed")
        self.ran.append((threading.current_thread().name, rows.tolist()))
        return super().run_rows(tok, rows)


def _spy(fail: bool = False) -> Spy:
    spec = STARTER.get("paraphrase-minilm-l3-v2")
    session = open_session(paraphrase_onnx(), SessionConfig(threads=1))
    tok = load_tokenizer(tokenizer_json(), spec.max_tokens)
    return Spy(spec, session, tok, RunLimits(max_batch=4, max_batch_tokens=256), fail=fail)


def test_every_row_runs_once_and_tokens_add_up() -> None:
    one = _spy()
    texts = corpus(48, 1)
    took, tokens = _pooled([one, one], texts)
    rows = sorted(r for _, part in one.ran for r in part)
    assert rows == list(range(len(texts))) and took > 0
    assert tokens == one.embed(texts).total_tokens
    rates, _, _ = limit([one, one], texts, rounds=2, warmup=4)
    assert len(rates) == 2 and all(r > 0 for r in rates) and round_rate([one], texts) > 0


def test_a_failed_run_reaches_the_caller() -> None:
    with pytest.raises(RuntimeError, match="the session failed"):
        _pooled([_spy(), _spy(fail=True)], corpus(48, 1))
    calls = [corpus(4, seed) for seed in range(4)]  # request-shaped: calls dealt to threads
    with pytest.raises(RuntimeError, match="the session failed"):
        _parallel([_spy(), _spy(fail=True)], calls)


class _Order:
    """Records which texts are embedded, in order (an embedder for `single_times`)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def embed(self, texts: list[str]) -> object:
        self.seen += texts
        return type("Out", (), {"total_tokens": 1})()


def test_lone_texts_are_timed_in_rounds_as_the_load_generator_sends_them() -> None:
    """The same text back to back ran ~1 ms faster than in turn with the others, which the
    paired overhead charged to the server: tries go in rounds over the texts."""
    spy = _Order()
    got = single_times(spy, ["a", "b", "c"], repeats=3, least=1)  # type: ignore[arg-type]
    assert spy.seen[1:] == ["a", "b", "c"] * 3  # after the warm-up of one
    assert sorted(got) == ["0", "1", "2"] and all(ms >= 0 for ms in got.values())
    late = _Order()  # past the budget: one round of the first `least` texts
    got = single_times(late, ["a", "b", "c"], repeats=3, until=0.0, least=2)  # type: ignore[arg-type]
    assert late.seen[2:] == ["a", "b"] and sorted(got) == ["0", "1"]


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_the_limit_computes_as_the_servers_do(backend: str, starter_service: Service) -> None:
    """The servers read EMBEDDER_BACKEND; the engine they are compared with (the limit, the
    lone texts) runs the level on the same runtime: on OpenVINO in a worker's layout only
    (one compiled model, a runner per core), on ONNX Runtime in both layouts."""
    pytest.importorskip("openvino")
    spec = STARTER.get("paraphrase-minilm-l3-v2")
    settings = Settings.from_env({"EMBEDDER_BACKEND": backend})
    got = measure(
        starter_service.store,
        spec,
        corpus(24, seed=4),
        threads=2,
        rounds=2,
        batch=8,
        request_slices=0,
        idle_texts=2,
        budget=5.0,
        settings=settings,
    )
    lone = lone_engine(starter_service.store, spec, settings, 2)
    if backend == "openvino":
        assert got.runtime.startswith("openvino ") and list(got.layouts) == ["2x1"]
        assert lone.session.backend == "openvino" and lone.limits.grid is not None
    else:
        assert got.runtime == "onnxruntime" and set(got.layouts) == {"1x2", "2x1"}
        assert not hasattr(lone.session, "backend") or lone.session.backend == "onnxruntime"
    assert got.texts_per_s > 0 and got.single_ms and got.single_ms_1t
