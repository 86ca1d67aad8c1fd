"""A worker joining a serving instance loads before it accepts: it keeps its heartbeat going
meanwhile, and its wait has an end."""

from __future__ import annotations

import threading

from embedder.catalog import STARTER, ModelSpec
from embedder.server.bootstrap import join
from embedder.service import Service
from embedder.store.files import ModelStore
from tests.polling import PATIENCE, wait_until

MODEL = "paraphrase-minilm-l3-v2"


class Worker:
    """The two things `join` uses of a gunicorn worker."""

    def __init__(self) -> None:
        self.alive = True
        self.beats = 0

    def notify(self) -> None:
        self.beats += 1


def held_service(store: ModelStore) -> tuple[Service, threading.Event]:
    """A service whose model load waits until the returned event is set (a slow download)."""
    svc = Service(STARTER, store, models=[MODEL])
    go = threading.Event()
    ensure = svc.store.ensure

    def slow(spec: ModelSpec) -> None:
        assert go.wait(PATIENCE), "the test never let the load go on"
        ensure(spec)

    svc.store.ensure = slow  # type: ignore[method-assign]
    return svc, go


def test_the_heartbeat_goes_on_while_the_models_load(starter_store: ModelStore) -> None:
    svc, go = held_service(starter_store)
    worker = Worker()
    loaded: list[bool] = []
    svc.start()
    try:
        t = threading.Thread(
            target=lambda: loaded.append(join(svc, worker, bound=PATIENCE, beat=0.01))
        )
        t.start()
        wait_until("heartbeats while the load is held", lambda: worker.beats >= 5)
        assert not loaded, "join returned before the load ended"
        go.set()
        t.join(PATIENCE)
        assert loaded == [True] and svc.ready
    finally:
        go.set()
        svc.wait(PATIENCE)  # no load left running into the interpreter's exit
        svc.stop()


def test_the_wait_ends_at_its_bound_or_when_the_worker_is_told_to_exit(
    starter_store: ModelStore,
) -> None:
    svc, go = held_service(starter_store)
    svc.start()
    try:
        assert join(svc, Worker(), bound=0.05, beat=0.01) is False
        assert join(svc, None, bound=0.05, beat=0.01) is False
        leaving = Worker()
        leaving.alive = False  # SIGTERM from the master: stop waiting, let the worker exit
        assert join(svc, leaving, bound=PATIENCE, beat=PATIENCE) is False
        assert leaving.beats == 1
        assert not svc.loader.settled
    finally:
        go.set()
        svc.wait(PATIENCE)  # no load left running into the interpreter's exit
        svc.stop()
