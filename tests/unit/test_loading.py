"""The model loader's thread: it never ends quietly while a retry is promised, the states it
publishes are snapshots, and stopping the service stops the models' runner threads."""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import pytest

from embedder.catalog import STARTER, Catalog
from embedder.errors import ModelUnavailable
from embedder.service import Service
from embedder.sessions import SessionConfig
from embedder.store.files import ModelStore
from tests.fakehub import FakeHub
from tests.polling import wait_until
from tests.unit.store.test_downloads import from_hub, publish

MODEL = "paraphrase-minilm-l3-v2"
ONE = Catalog(name="t", models=(from_hub("a", "o/a", 1),))


def test_a_failure_in_a_retry_round_is_logged_and_the_retries_go_on(
    tmp_path: Path, starter_store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener of model states raises while a retry is being scheduled (any bug there did
    the same): the loader thread used to die with it, and /health showed `retry_in` for a
    retry that never came. Now it is logged, and the retry still loads the model."""
    with FakeHub(chunk_size=1024 * 1024) as hub:
        svc = Service(ONE, ModelStore(tmp_path, ONE, endpoint=hub.url, offline=False))
        loader = svc.loader
        loader.retry_first = 0.05
        tell = loader.on_change
        broke: list[bool] = []

        def flaky() -> None:
            if loader._loaded.is_set() and not broke:  # the first change after the first load
                broke.append(True)
                raise RuntimeError("a listener broke")
            tell()

        loader.on_change = flaky
        with caplog.at_level(logging.ERROR, logger="embedder.loading"):
            svc.start()
            try:
                wait_until("the listener broke in a retry round", lambda: broke)
                publish(hub, starter_store, "o/a")
                wait_until("the retry loaded the model", lambda: svc.health()["status"] == "ok")
            finally:
                svc.stop()
    assert "a listener broke" in caplog.text


class BrokenTimer(threading.Event):
    """The retry loop's wait raises: a bug nothing in the loop expects."""

    def wait(self, timeout: float | None = None) -> bool:
        raise RuntimeError("the retry timer broke")


def test_when_the_retries_end_on_a_bug_health_stops_promising_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeHub(chunk_size=1024 * 1024) as hub:
        svc = Service(ONE, ModelStore(tmp_path, ONE, endpoint=hub.url, offline=False))
        svc.loader._stop = BrokenTimer()
        with caplog.at_level(logging.ERROR, logger="embedder.loading"):
            svc.start()
            try:
                wait_until(
                    "the retries given up, visibly",
                    lambda: "retries stopped" in svc.health().get("errors", {}).get("a", ""),
                )
                health = svc.health()
            finally:
                svc.stop()
    assert "retry_in" not in health, health
    assert "RuntimeError: the retry timer broke" in health["errors"]["a"]
    assert "the retry timer broke" in caplog.text


def test_a_status_once_read_never_changes(starter_store: ModelStore) -> None:
    """A request thread reads a model's state, error and retry time as one: the loader replaces
    the status rather than writing its fields one by one under the reader."""
    svc = Service(STARTER, starter_store, models=[MODEL])
    before = svc.status_by_id[MODEL]
    svc.load_all()
    after = svc.status_by_id[MODEL]
    svc.stop()
    assert (before.state, after.state) == ("pending", "ready")
    with pytest.raises(dataclasses.FrozenInstanceError):
        after.state = "error"  # type: ignore[misc]


def test_stopping_the_service_ends_its_runner_threads(starter_store: ModelStore) -> None:
    svc = Service(STARTER, starter_store, models=[MODEL], session_config=SessionConfig(threads=2))
    svc.load_all()
    spec = svc.resolve(MODEL)
    assert svc.embed(["before"], spec).vectors.shape == (1, 384)
    runners = svc.batchers[MODEL]._threads
    assert len(runners) == 2 and all(t.is_alive() for t in runners)
    svc.stop()
    assert not any(t.is_alive() for t in runners)
    with pytest.raises(ModelUnavailable, match="stopped"):
        svc.embed(["after"], spec)


def test_the_loaded_weights_settle_once_the_first_load_has_ended(
    starter_store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    """`settle` (the weights onto huge pages) runs after the models are in, never before the
    service is settled, and what it raises is logged without ending the loader's thread."""
    svc = Service(STARTER, starter_store, models=[MODEL])
    seen: list[tuple[bool, str]] = []

    def settle() -> None:
        seen.append((svc.loader.settled, svc.status_by_id[MODEL].state))
        raise RuntimeError("settling broke")

    svc.loader.settle = settle
    with caplog.at_level(logging.ERROR, logger="embedder.loading"):
        svc.start()
        try:
            wait_until("the weights settled", lambda: seen)
            wait_until("the loader went on", lambda: not svc.loader._thread.is_alive())  # type: ignore[union-attr]
        finally:
            svc.stop()
    assert seen == [(True, "ready")]
    assert "settling broke" in caplog.text


def test_nothing_settles_when_no_model_loaded(tmp_path: Path) -> None:
    svc = Service(ONE, ModelStore(tmp_path, ONE, offline=True))
    calls: list[int] = []
    svc.loader.settle = lambda: calls.append(1)
    svc.loader.retry_first = 3600
    svc.start()
    try:
        assert not svc.wait(60)
        thread = svc.loader._thread
        assert thread is not None
        # the loader has gone past its settling: it waits for a retry, or it has ended
        wait_until(
            "the loader past its settling",
            lambda: not thread.is_alive() or svc.status_by_id["a"].retry_at is not None,
        )
    finally:
        svc.stop()
    assert calls == []


def test_the_server_puts_the_weights_on_huge_pages_and_a_setting_stops_it(
    starter_store: ModelStore,
) -> None:
    assert Service(STARTER, starter_store, models=[MODEL], huge_pages=True).loader.settle
    assert Service(STARTER, starter_store, models=[MODEL]).loader.settle is None
