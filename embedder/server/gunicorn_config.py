"""gunicorn settings for hero_embedder_provider, shipped inside the package so that an installed
copy serves from any directory: `gunicorn -c python:embedder.server.gunicorn_config` (what
`embedder serve` runs). A checkout's top-level `gunicorn.conf.py` imports this module.

Flat settings in sections, each overridable from the environment (names in the README). Every
variable is read once, by `embedder.settings.Settings`, which names the variable of a bad value.
Nothing heavy happens at import: the listeners are worked out in `on_starting`, and models
load in each worker after fork.
"""

import os
import sys
from typing import Any

from embedder.errors import ConfigError
from embedder.settings import Settings

try:
    _settings = Settings.from_env()
except ConfigError as _exc:
    sys.exit(f"hero_embedder_provider: {_exc.message}")
_workers, _ort_threads = _settings.sizing()

# --- application -------------------------------------------------------------------------
wsgi_app = "embedder.server.wsgi:app"
preload_app = False  # ONNX Runtime sessions must be made after fork, in each worker
proc_name = "hero_embedder_provider"

# --- listeners ---------------------------------------------------------------------------
# Worked out in on_starting (the unix sockets plus the TCP address, see
# embedder.server.listeners) and kept for the master's life: on_starting also sets `bind` here,
# and a SIGHUP reload reads this module again from the import cache (directly with `python:`,
# or through a checkout's gunicorn.conf.py), so it finds the same listeners and keeps them.
bind = [f"unix:{_settings.socket_dir / 'rest.sock'}"]
umask = 0o117  # applied only while binding: socket files get 0660
backlog = _settings.backlog
# gunicorn 25+ opens a control socket at one per-user path: two instances would collide.
control_socket_disable = True

# --- workers: workers x cores per worker = the cores the service may use -----------------
# Each worker runs a single-thread ONNX Runtime session per core it owns (embedder.batcher).
workers = _workers
# gthread that reads each request in its poller and keeps a thread pool per listener.
worker_class = "embedder.server.http.worker.GuardedWorker"
# HTTP threads per worker: requests waiting on the micro-batcher hold a thread but no core,
# so more threads mean larger shared runs and a /health that still answers under load.
threads = _settings.http_threads
# Long enough for the largest request (2048 long texts at the largest level on one core).
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.keepalive

# --- request limits ----------------------------------------------------------------------
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# gunicorn lets a "trusted" peer (loopback or any unix socket client) rewrite SCRIPT_NAME and
# PATH_INFO through request headers; a mismatching `Script_Name:` then gave "500 Bad Request".
# No proxy in front of this service sets them, so no client may: such headers are dropped.
forwarder_headers = ""

# --- logging -----------------------------------------------------------------------------
loglevel = _settings.log_level
errorlog = "-"


# --- hooks -------------------------------------------------------------------------------
def on_starting(server: Any) -> None:
    """Master, before binding: claim the socket directory, choose TCP, log the settings."""
    global bind
    from embedder.server.listeners import (
        ListenError,
        binds,
        claim_socket,
        fresh_state_dir,
        prepare_socket_dir,
    )
    from embedder.sessions import disable_ort_telemetry
    from embedder.settings import unread

    disable_ort_telemetry()  # before any worker imports onnxruntime; workers inherit it
    try:
        prepare_socket_dir(_settings.socket_dir)
        addresses = binds(_settings)
        for address in addresses:
            if address.startswith("unix:"):
                from pathlib import Path

                claim_socket(Path(address[5:]))
        # Files the workers share, wiped per start: prometheus_client's multiprocess samples
        # (so /metrics sums every worker) and the worker board (so any worker answers for all).
        for name, env in (
            (".metrics", "PROMETHEUS_MULTIPROC_DIR"),
            (".workers", "EMBEDDER_WORKER_BOARD"),
        ):
            os.environ[env] = str(fresh_state_dir(_settings.socket_dir, name))
    except ListenError as exc:
        server.log.error("%s", exc)
        raise SystemExit(2) from None
    server.cfg.set("bind", addresses)
    bind = addresses
    for line in _settings.log_lines():
        server.log.info("%s", line)
    for line in unread(os.environ):
        server.log.warning("%s", line)
    server.log.info(
        "workers=%d x cores per worker=%d; listening on %s", _workers, _ort_threads, addresses
    )


def when_ready(server: Any) -> None:
    server.log.info("hero_embedder_provider ready to accept connections")


def child_exit(server: Any, worker: Any) -> None:
    """Master: a dead worker's live gauges leave the sums, and its state leaves the board."""
    from pathlib import Path

    from prometheus_client import multiprocess

    from embedder.server.workers import WorkerBoard

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
    if os.environ.get("EMBEDDER_WORKER_BOARD"):
        WorkerBoard(Path(os.environ["EMBEDDER_WORKER_BOARD"])).remove(worker.pid)


def worker_exit(server: Any, worker: Any) -> None:
    """Worker, as it exits: its metrics write the counts of their last round. gunicorn also
    calls it in the master for a worker found dead before it was reaped: there the app was
    never imported, and must not be (the master forks later workers from its state)."""
    import sys

    bootstrap = sys.modules.get("embedder.server.bootstrap")
    if bootstrap is not None:
        bootstrap.exits()


def post_fork(server: Any, worker: Any) -> None:
    """Worker, before the app loads: cap malloc arenas (flat RSS, see embedder.memory), tell
    the app its worker, and say "starting" at once, so /health is never ok early."""
    from pathlib import Path

    from embedder.memory import limit_arenas
    from embedder.server import bootstrap
    from embedder.server.workers import WorkerBoard

    limit_arenas()
    bootstrap.runs_in(worker)  # a joining worker keeps its heartbeat while it loads

    board_dir = os.environ.get("EMBEDDER_WORKER_BOARD")  # set in on_starting, after _settings
    if board_dir and not WorkerBoard(Path(board_dir)).has_served():
        # First start (a reload or respawn loads before it accepts, and keeps quiet).
        WorkerBoard(Path(board_dir)).publish(
            {"status": "starting", "models_ready": False, "models_loaded": [], "models": {}}
        )
