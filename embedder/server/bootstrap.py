"""Wiring: settings -> catalog, store, service -> the WSGI app. Runs in each worker."""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import falcon

from embedder.backends.runtimes import BackendPolicy
from embedder.catalog_file import load_catalog
from embedder.limits import RequestLimits
from embedder.planning import RunLimits
from embedder.server.http.app import HttpOptions, create_app
from embedder.server.http.deadline import Watchdog
from embedder.server.http.metrics import Metrics
from embedder.server.workers import WorkerBoard
from embedder.service import Service
from embedder.sessions import SessionConfig, disable_ort_telemetry
from embedder.settings import Settings
from embedder.store.files import ModelStore

log = logging.getLogger("embedder")

# How long a worker joining a serving instance loads before it accepts anyway (answering for
# the models still loading as at a first start): a download that hangs must not keep it out
# for good, while any ordinary download or rebuild ends well within it.
JOIN_WAIT = 600.0


class Heart(Protocol):
    """What a joining worker needs of the gunicorn worker it runs in."""

    alive: bool  # false once the master has told it to exit

    def notify(self) -> None: ...  # the heartbeat the master checks against its timeout


_worker: Heart | None = None
_metrics: Metrics | None = None  # the worker's, flushed as it exits


def runs_in(worker: Heart) -> None:
    """Called by gunicorn's post_fork hook: the worker this process is, for `join`."""
    global _worker
    _worker = worker


def exits() -> None:
    """Called by gunicorn's worker_exit hook, in the worker: the counts its metrics hold
    since their last flush go to the files the surviving workers' scrapes read."""
    if _metrics is not None:
        _metrics.close()


def join(service: Service, worker: Heart | None, *, bound: float, beat: float) -> bool:
    """Wait for the first load of every model, telling the master every `beat` seconds that
    this worker lives: the master kills a worker silent for EMBEDDER_TIMEOUT, and a worker
    killed while it loads is replaced by one that loads again, for good when the load takes
    longer than that. Ends after `bound` seconds, or once the worker is told to exit; True
    when the load has ended (whatever its outcome)."""
    deadline = time.monotonic() + bound
    while True:
        if worker is not None:
            worker.notify()
            if not worker.alive:
                return False
        left = deadline - time.monotonic()
        if service.loader.settled or left <= 0:
            return service.loader.settled
        service.wait(min(beat, left))


def build_service(settings: Settings, board: WorkerBoard | None = None) -> Service:
    catalog = load_catalog(settings.catalog)
    _, threads = settings.sizing()
    return Service(
        catalog,
        ModelStore(settings.models_root, catalog),
        session_config=SessionConfig(threads=threads, shared_weights=settings.shared_weights),
        limits=RequestLimits(
            max_inputs=settings.max_inputs, max_input_chars=settings.max_input_chars
        ),
        run_limits=RunLimits(max_batch_tokens=settings.max_batch_tokens),
        models=settings.models or None,
        backends=BackendPolicy(settings.backend, settings.exact_fp32),
        max_queue_wait=settings.max_queue_wait,
        board=board,
        huge_pages=settings.huge_pages,
    )


def build_app(
    settings: Settings | None = None, *, master_pid: int | None = None
) -> falcon.App[Any, Any]:
    """The app a worker serves; model loading starts in the background at once.

    At first start every worker accepts at once, so /health can say "starting". A worker that
    joins a service already serving (a reload, or a replacement for a killed worker) instead
    loads its models before it accepts anything, so it never answers "not ready" while its
    siblings could have served the request; meanwhile it keeps its heartbeat going (`join`),
    and after JOIN_WAIT it accepts anyway.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    disable_ort_telemetry()  # set by gunicorn's master already; this covers any other server
    settings = settings or Settings.from_env()
    board = WorkerBoard(settings.worker_board) if settings.worker_board else None
    service = build_service(settings, board)
    joining = board is not None and board.has_served()
    service.view.joining = joining
    service.start()
    if joining:
        log.info("joining a serving instance: loading models first")
        beat = min(1.0, settings.timeout / 4)
        loaded = join(service, _worker, bound=JOIN_WAIT, beat=beat)
        if not loaded and (_worker is None or _worker.alive):
            log.warning(
                "models still loading after %.0f s: accepting requests meanwhile", JOIN_WAIT
            )
            service.view.joining = False  # this worker's state counts from now on
            service.view.publish()
    # The worker owns these for its life; its exit ends their threads (and flushes the metrics).
    global _metrics
    metrics = _metrics = Metrics(multiprocess=settings.metrics_dir is not None)
    metrics.start_refresh(service)
    return create_app(
        service,
        HttpOptions(
            max_body_bytes=settings.max_body_bytes,
            body_timeout=settings.body_timeout,
            tcp_expose=settings.tcp_expose,
            api_key=settings.api_key,
            socket_dir=settings.socket_dir,
            trust_in_process=False,
            master_pid=master_pid,
            access_log=settings.access_log_json,
        ),
        metrics=metrics,
        watchdog=Watchdog(),
    )
