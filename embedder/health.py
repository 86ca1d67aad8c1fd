"""What the service says of itself: its state from its models' in this process, and, with a
board of workers (a pre-fork server), every live worker's combined, so any worker answers
the same whichever one a request lands on."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from typing import Any, Protocol

from embedder.batcher import Batcher
from embedder.catalog import Catalog, ModelSpec
from embedder.loading import Loader
from embedder.model_state import ORDER, ModelStatus, error_text, keyed_causes, report
from embedder.store.files import ModelStore

log = logging.getLogger("embedder.health")


class Board(Protocol):
    """Where each worker posts its view and reads its siblings' (`server.workers.WorkerBoard`)."""

    def publish(self, snapshot: dict[str, Any]) -> None: ...

    def read(self) -> dict[int, dict[str, Any]]: ...

    def mark_served(self) -> None: ...


def state_of(statuses: dict[str, ModelStatus]) -> str:
    """starting | ok | degraded (some models failed, others serve) | error (none serve)."""
    states = [s.state for s in statuses.values()]
    if any(s in ("pending", "downloading", "loading") for s in states):
        return "starting"
    if all(s == "ready" for s in states):
        return "ok"
    return "degraded" if "ready" in states else "error"


def combine(states: list[str]) -> str:
    """The service's state from its workers': it is ok only when every worker is."""
    if not states:
        return "starting"
    if "starting" in states:
        return "starting"
    if all(s == "ok" for s in states):
        return "ok"
    return "error" if all(s == "error" for s in states) else "degraded"


def queue(batcher: Batcher) -> dict[str, Any]:
    """A micro-batched model's queue in this worker: texts reserved, waiting or running, and
    the seconds their work takes at the rate of its recent runs (None before its first run).
    Each worker has its own; a request is refused while its own would take its queue past
    the bounds."""
    texts, seconds = batcher.backlog()
    return {"texts": texts, "seconds": None if seconds is None else round(seconds, 3)}


class Health:
    def __init__(
        self, catalog: Catalog, store: ModelStore, loader: Loader, board: Board | None
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.loader = loader
        self.board = board
        self.joining = False  # set for a worker that loads before it accepts (reload, respawn)
        self.started_at = time.time()

    def state(self) -> str:
        return state_of(self.loader.status_by_id)

    def local(self) -> dict[str, Any]:
        """This process's view: its own models."""
        statuses = self.loader.status_by_id
        status = state_of(statuses)
        out: dict[str, Any] = {
            "status": status,
            "models_ready": status == "ok",
            "models_loaded": [i for i, s in statuses.items() if s.state == "ready"],
            "models": {i: s.state for i, s in statuses.items()},
        }
        return {**out, **report(statuses)}

    def publish(self) -> None:
        """Post this worker's view (on every change of a model's state)."""
        if self.board is None:
            return
        try:
            health = self.local()
            if self.joining and health["status"] == "starting":
                return  # not accepting yet: the siblings answer for the service
            self.board.publish(health)
            if health["status"] in ("ok", "degraded"):
                self.board.mark_served()
        except OSError as exc:
            log.warning("cannot publish worker state: %s", exc)

    def _workers(self) -> dict[int, dict[str, Any]]:
        """Every live worker's published view, this one's fresh."""
        workers = self.board.read() if self.board is not None else {}
        workers[os.getpid()] = {"pid": os.getpid(), **self.local()}
        return workers

    def health(self) -> dict[str, Any]:
        """The service's view: every live worker's, so any worker answers the same."""
        if self.board is None:
            mine = self.local()
            del mine["models"]
            return mine
        workers = self._workers()
        mine = workers[os.getpid()]
        ready = set(mine["models_loaded"])
        errors: dict[str, Any] = {}
        failures: dict[str, Any] = {}
        for w in workers.values():
            ready &= set(w.get("models_loaded", []))
            errors.update(w.get("errors", {}))
            failures.update(w.get("failures", {}))
        status = combine([w["status"] for w in workers.values()])
        out: dict[str, Any] = {
            "status": status,
            "models_ready": status == "ok",
            "models_loaded": [m for m in mine["models_loaded"] if m in ready],
            "workers": {str(pid): w["status"] for pid, w in sorted(workers.items())},
        }
        if errors:
            out["errors"] = errors
        if failures:
            out["failures"] = failures
        if "retry_in" in mine:
            out["retry_in"] = mine["retry_in"]
        return out

    def model(
        self, spec: ModelSpec, workers: dict[int, dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """One model; its state is the least advanced over the workers (ready only when every
        worker can serve it)."""
        statuses = self.loader.status_by_id
        st = statuses.get(spec.id, ModelStatus())
        batcher = self.loader.batchers.get(spec.id)
        state: str = st.state
        for w in (workers or {}).values():
            other = w.get("models", {}).get(spec.id, state)
            if ORDER.get(other, 0) < ORDER.get(state, 0):
                state = other
        return {
            **spec.describe(),
            "state": state,
            "ready": state == "ready",
            "error": error_text(st, keyed_causes(statuses.values())),
            "load_seconds": st.load_seconds,
            "backend": st.runtime.backend if st.runtime else None,
            "compute_precision": st.runtime.compute_precision if st.runtime else None,
            "disk_bytes": self.store.disk_size(spec),
            "batching": asdict(batcher.stats) if batcher else None,
            "queue": queue(batcher) if batcher else None,
        }

    def models(self) -> list[dict[str, Any]]:
        workers = self._workers() if self.board is not None else None
        return [self.model(s, workers) for s in self.loader.specs]

    def status(self) -> dict[str, Any]:
        return {
            **self.health(),
            "catalog": self.catalog.name,
            "models_root": str(self.store.root),
            "uptime_s": round(time.time() - self.started_at, 1),
            "models": self.models(),
            "downloads": {s.id: self.store.progress(s) for s in self.loader.specs},
            "aliases": dict(self.catalog.aliases),
        }
