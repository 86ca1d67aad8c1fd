"""Wiring: settings -> catalog, store, service -> the WSGI app. Runs in each worker."""

from __future__ import annotations

import logging
from typing import Any

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


def build_service(settings: Settings, board: WorkerBoard | None = None) -> Service:
    catalog = load_catalog(settings.catalog)
    _, threads = settings.sizing()
    return Service(
        catalog,
        ModelStore(settings.models_root, catalog),
        session_config=SessionConfig(
            threads=threads, arena=settings.ort_arena, shared_weights=settings.shared_weights
        ),
        limits=RequestLimits(
            max_inputs=settings.max_inputs, max_input_chars=settings.max_input_chars
        ),
        run_limits=RunLimits(settings.max_batch, settings.max_batch_tokens),
        models=settings.models or None,
        micro_batching=settings.micro_batch,
        shared_sessions=settings.shared_sessions,
        lone_session=settings.lone_session,
        backends=BackendPolicy(settings.backend, settings.exact_fp32),
        max_queue_wait=settings.max_queue_wait,
        idle_trim=settings.idle_trim,
        board=board,
    )


def build_app(
    settings: Settings | None = None, *, master_pid: int | None = None
) -> falcon.App[Any, Any]:
    """The app a worker serves; model loading starts in the background at once.

    At first start every worker accepts at once, so /health can say "starting". A worker that
    joins a service already serving (a reload, or a replacement for a killed worker) instead
    loads its models before it accepts anything, so it never answers "not ready" while its
    siblings could have served the request.
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
        logging.getLogger("embedder").info("joining a serving instance: loading models first")
        service.wait()
    # The worker owns these for its life; its exit ends their threads.
    metrics = Metrics(multiprocess=settings.metrics_dir is not None)
    metrics.start_refresh(service)
    return create_app(
        service,
        HttpOptions(
            max_body_bytes=settings.max_body_bytes,
            body_timeout=settings.body_timeout,
            tcp_expose=settings.tcp_expose,
            api_key=settings.api_key,
            master_pid=master_pid,
            access_log=settings.access_log_json,
        ),
        metrics=metrics,
        watchdog=Watchdog(),
    )
