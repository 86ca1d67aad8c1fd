"""Every setting, read once from the environment into one frozen object (logged at start)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from embedder.errors import ConfigError

DEFAULT_PORT = 8092


N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], name: str, default: N, minimum: N, kind: type[N]) -> N:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name}={raw!r} is not {what}") from None
    if not value >= minimum:  # also refuses nan
        raise ConfigError(f"{name}={value} is below {minimum}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    return _number(env, name, default, minimum, int)


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    return _number(env, name, default, minimum, float)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use 1/0)")


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
BACKENDS = ("auto", "onnxruntime", "openvino")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in allowed:
        raise ConfigError(f"{name}={raw!r} is not one of {', '.join(allowed)}")
    return raw


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw) if raw else None


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in env.get(name, "").split(",") if p.strip())


def default_socket_root(env: Mapping[str, str]) -> Path:
    """$PATH_SOCKETS, else ~/hero/var/sockets (the hero layout); the service adds its folder."""
    raw = env.get("PATH_SOCKETS", "").strip()
    return Path(raw).expanduser() if raw else Path.home() / "hero" / "var" / "sockets"


def default_models_root(env: Mapping[str, str]) -> Path:
    raw = env.get("EMBEDDER_MODELS_ROOT", "").strip()
    if raw:
        return Path(raw).expanduser()
    cache = env.get("XDG_CACHE_HOME", "").strip()
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "hero_embedder_provider" / "models"


CORES_PER_WORKER = 4  # default sizing: a worker per this many cores (see Settings.sizing)


@dataclass(frozen=True)
class Settings:
    catalog: str = "bge"
    models_root: Path = field(default_factory=lambda: default_models_root({}))
    models: tuple[str, ...] = ()  # empty: every model of the catalog
    socket_dir: Path = field(
        default_factory=lambda: default_socket_root({}) / "hero_embedder_provider"
    )
    bind: str | None = None  # None: probe mycelium, else 127.0.0.1:8092; "": no TCP
    tcp_expose: tuple[str, ...] = ()  # extra surfaces on TCP: rpc, admin, metrics
    api_key: str | None = None
    workers: int = 0  # 0: derived from cores and threads
    threads: int = 0  # ORT intra-op threads per worker; 0: derived
    cores: int = 0  # cores the service may use; 0: all
    ort_arena: bool = True
    shared_weights: bool = False  # one copy of each model's weights for all sessions (slower)
    micro_batch: bool = True  # concurrent requests in a worker share ONNX Runtime runs
    shared_sessions: bool = True  # a worker's runners share one session per model
    lone_session: bool = False  # + an all-core session per embedding model for lone texts
    backend: str = "auto"  # auto | onnxruntime | openvino: the runtime of each model
    exact_fp32: bool = False  # FP32 levels and rerankers compute in FP32, never BF16
    max_queue_wait: int = 10  # seconds of queued work beyond which requests get 503
    idle_trim: float = 1.0  # seconds idle before freed memory goes back to the system; 0: never
    max_batch: int = 32
    max_batch_tokens: int = 2048
    max_inputs: int = 2048
    max_input_chars: int = 100_000
    max_body_bytes: int = 16 * 1024 * 1024
    body_timeout: int = 30  # seconds for a request body to arrive (slow clients)
    header_timeout: int = 5  # seconds for a request's header block to arrive, else 408
    max_connections: int = 100  # open connections per listener per worker (then: backlog)
    access_log_json: bool = False  # one JSON line per request (ids and sizes, never text)
    mycelium_api: str = "http://127.0.0.1:8989"
    port: int = DEFAULT_PORT
    malloc_arenas: int = 2  # glibc malloc arenas per worker (fewer: flatter RSS)
    # gunicorn (gunicorn.conf.py takes these as they are)
    http_threads: int = 16  # HTTP threads per worker (gthread)
    worker_class: str = "embedder.server.http.worker.GuardedWorker"
    timeout: int = 300  # s a worker may be silent before the master restarts it
    graceful_timeout: int = 30
    keepalive: int = 5
    keepalive_linger_ms: int = 2  # a thread waits this long for a kept-alive next request
    backlog: int = 256
    max_requests: int = 0  # a worker is replaced after this many requests; 0: never
    max_requests_jitter: int = 0
    log_level: str = "info"
    access_log: str | None = None  # gunicorn's access log: a path or "-" (stderr)
    control_socket: str | None = None  # gunicorn's control socket; off unless set
    # Set by the master for its workers, never by hand (gunicorn.conf.py): the worker board
    # and prometheus_client's multiprocess directory (which that library reads itself).
    worker_board: Path | None = None
    metrics_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        bind = env.get("EMBEDDER_BIND")
        return cls(
            catalog=env.get("EMBEDDER_CATALOG", "").strip() or "bge",
            models_root=default_models_root(env),
            models=_list(env, "EMBEDDER_MODELS"),
            socket_dir=default_socket_root(env) / "hero_embedder_provider",
            bind=None if bind is None else bind.strip(),
            tcp_expose=_list(env, "EMBEDDER_TCP_EXPOSE"),
            api_key=env.get("EMBEDDER_API_KEY") or None,
            workers=_int(env, "EMBEDDER_WORKERS", 0),
            threads=_int(env, "EMBEDDER_THREADS", 0),
            cores=_int(env, "EMBEDDER_CORES", 0),
            ort_arena=_bool(env, "EMBEDDER_ORT_ARENA", True),
            shared_weights=_bool(env, "EMBEDDER_SHARED_WEIGHTS", False),
            micro_batch=_bool(env, "EMBEDDER_MICRO_BATCH", True),
            shared_sessions=_bool(env, "EMBEDDER_SHARED_SESSIONS", True),
            lone_session=_bool(env, "EMBEDDER_LONE_SESSION", False),
            backend=_choice(env, "EMBEDDER_BACKEND", "auto", BACKENDS),
            exact_fp32=_bool(env, "EMBEDDER_EXACT_FP32", False),
            max_queue_wait=_int(env, "EMBEDDER_MAX_QUEUE_WAIT", 10, 1),
            idle_trim=_float(env, "EMBEDDER_IDLE_TRIM", 1.0),
            max_batch=_int(env, "EMBEDDER_MAX_BATCH", 32, 1),
            max_batch_tokens=_int(env, "EMBEDDER_MAX_BATCH_TOKENS", 2048, 256),
            max_inputs=_int(env, "EMBEDDER_MAX_INPUTS", 2048, 1),
            max_input_chars=_int(env, "EMBEDDER_MAX_INPUT_CHARS", 100_000, 1),
            max_body_bytes=_int(env, "EMBEDDER_MAX_BODY_BYTES", 16 * 1024 * 1024, 1024),
            body_timeout=_int(env, "EMBEDDER_BODY_TIMEOUT", 30, 1),
            header_timeout=_int(env, "EMBEDDER_HEADER_TIMEOUT", 5, 1),
            max_connections=_int(env, "EMBEDDER_MAX_CONNECTIONS", 100, 1),
            access_log_json=_bool(env, "EMBEDDER_ACCESS_LOG_JSON", False),
            mycelium_api=env.get("EMBEDDER_MYCELIUM_API", "").strip() or "http://127.0.0.1:8989",
            port=_int(env, "EMBEDDER_PORT", DEFAULT_PORT, 1),
            malloc_arenas=_int(env, "EMBEDDER_MALLOC_ARENAS", 2, 1),
            http_threads=_int(env, "EMBEDDER_HTTP_THREADS", 16, 1),
            worker_class=env.get("EMBEDDER_WORKER_CLASS", "").strip()
            or "embedder.server.http.worker.GuardedWorker",
            timeout=_int(env, "EMBEDDER_TIMEOUT", 300, 1),
            graceful_timeout=_int(env, "EMBEDDER_GRACEFUL_TIMEOUT", 30, 0),
            keepalive=_int(env, "EMBEDDER_KEEPALIVE", 5, 0),
            keepalive_linger_ms=_int(env, "EMBEDDER_KEEPALIVE_LINGER_MS", 2, 0),
            backlog=_int(env, "EMBEDDER_BACKLOG", 256, 1),
            max_requests=_int(env, "EMBEDDER_MAX_REQUESTS", 0),
            max_requests_jitter=_int(env, "EMBEDDER_MAX_REQUESTS_JITTER", 0),
            log_level=_choice(env, "EMBEDDER_LOG_LEVEL", "info", LOG_LEVELS),
            access_log=env.get("EMBEDDER_ACCESS_LOG", "").strip() or None,
            control_socket=env.get("EMBEDDER_CONTROL_SOCKET", "").strip() or None,
            worker_board=_path(env, "EMBEDDER_WORKER_BOARD"),
            metrics_dir=_path(env, "PROMETHEUS_MULTIPROC_DIR"),
        )

    def sizing(self, cpu_count: int | None = None) -> tuple[int, int]:
        """(workers, cores per worker) with workers x threads = the cores the service may use.

        A worker runs one single-thread ONNX Runtime session per core it owns, sharing one
        micro-batch queue per model (`embedder.batcher`), so default to few workers: one per
        `CORES_PER_WORKER` cores. Measured on 2 cores (INT8, 32-text requests): 1x2 served 253
        texts/s at concurrency 1 and 263 at 4, where 2x1 served 135 at 1 (one core idle) and
        177 at 4 (kept-alive connections pinned 3:1 to the workers). More workers bound what
        one Python process (the GIL) must handle on large machines.
        """
        cores = self.cores or cpu_count or os.cpu_count() or 1
        if self.workers and self.threads:
            return self.workers, self.threads
        if self.workers:
            return self.workers, max(1, cores // self.workers)
        if self.threads:
            return max(1, cores // self.threads), self.threads
        workers = -(-cores // CORES_PER_WORKER)
        return workers, max(1, cores // workers)

    def public(self) -> dict[str, Any]:
        """For the start-up log and `status`: everything but the API key."""
        out = asdict(self)
        out["api_key"] = "set" if self.api_key else None
        return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}
