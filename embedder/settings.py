"""Every setting, read once from the environment into one frozen object (logged at start)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embedder.errors import ConfigError

DEFAULT_PORT = 8092


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} is below {minimum}")
    return value


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
    threads: int = 0  # cores per worker, a micro-batch runner on each; 0: derived
    cores: int = 0  # cores the service may use; 0: all
    shared_weights: bool = False  # one copy of each model's weights for all sessions (slower)
    huge_pages: bool = True  # loaded weights collapsed onto transparent huge pages
    backend: str = "auto"  # auto | onnxruntime | openvino: the runtime of each model
    exact_fp32: bool = False  # FP32 levels and rerankers compute in FP32, never BF16
    max_queue_wait: int = 10  # seconds of queued work beyond which requests get 503
    max_batch_tokens: int = 2048  # padded tokens in one ONNX Runtime run, at most
    max_inputs: int = 2048
    max_input_chars: int = 100_000
    max_body_bytes: int = 16 * 1024 * 1024
    body_timeout: int = 30  # seconds for a request body to arrive (slow clients)
    header_timeout: int = 5  # seconds for a request's header block to arrive, else 408
    max_connections: int = 100  # open connections per listener per worker (then: backlog)
    access_log_json: bool = False  # one JSON line per request (ids and sizes, never text)
    mycelium_api: str = "http://127.0.0.1:8989"
    port: int = DEFAULT_PORT
    # gunicorn (gunicorn.conf.py takes these as they are)
    http_threads: int = 16  # HTTP threads per worker (gthread)
    timeout: int = 300  # s a worker may be silent before the master restarts it
    graceful_timeout: int = 30
    keepalive: int = 5
    backlog: int = 256
    log_level: str = "info"
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
            shared_weights=_bool(env, "EMBEDDER_SHARED_WEIGHTS", False),
            huge_pages=_bool(env, "EMBEDDER_HUGE_PAGES", True),
            backend=_choice(env, "EMBEDDER_BACKEND", "auto", BACKENDS),
            exact_fp32=_bool(env, "EMBEDDER_EXACT_FP32", False),
            max_queue_wait=_int(env, "EMBEDDER_MAX_QUEUE_WAIT", 10, 1),
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
            http_threads=_int(env, "EMBEDDER_HTTP_THREADS", 16, 1),
            timeout=_int(env, "EMBEDDER_TIMEOUT", 300, 1),
            graceful_timeout=_int(env, "EMBEDDER_GRACEFUL_TIMEOUT", 30, 0),
            keepalive=_int(env, "EMBEDDER_KEEPALIVE", 5, 0),
            backlog=_int(env, "EMBEDDER_BACKLOG", 256, 1),
            log_level=_choice(env, "EMBEDDER_LOG_LEVEL", "info", LOG_LEVELS),
            worker_board=_path(env, "EMBEDDER_WORKER_BOARD"),
            metrics_dir=_path(env, "PROMETHEUS_MULTIPROC_DIR"),
        )

    def sizing(self, cpu_count: int | None = None) -> tuple[int, int]:
        """(workers, cores per worker) with workers x threads = the cores the service may use.

        A worker runs one single-thread ONNX Runtime session per core it owns, sharing one
        micro-batch queue per model (`embedder.batcher`), so default to few workers: one per
        `CORES_PER_WORKER` cores: one worker's runners keep every core busy for one client,
        where kept-alive connections pinned to several workers leave cores idle
        (docs/performance.md has the runs). More workers bound what one Python process (the
        GIL) must handle on large machines.
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

    def log_lines(self, width: int = 100) -> list[str]:
        """The start-up log's `settings:` lines: what was changed from the defaults first (what
        an operator looks for), then the rest, `name=value` wrapped to `width` characters."""
        defaults = type(self)().public()
        values = {k: v for k, v in self.public().items() if k not in _SET_BY_THE_MASTER}
        changed = [f"{k}={_shown(v)}" for k, v in values.items() if v != defaults[k]]
        rest = [f"{k}={_shown(v)}" for k, v in values.items() if v == defaults[k]]
        return _wrap("settings changed:", changed or ["none"], width) + _wrap(
            "settings at defaults:", rest, width
        )


_SET_BY_THE_MASTER = ("worker_board", "metrics_dir")  # for its workers, after this log


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "-"
    return "-" if value is None else str(value) or '""'


def _wrap(head: str, items: list[str], width: int) -> list[str]:
    lines, line = [], head
    for item in items:
        if len(line) + 1 + len(item) > width and line != head:
            lines.append(line)
            line = " " * 2 + item
        else:
            line += " " + item
    return [*lines, line]


_RECYCLING = "no worker is recycled unless gunicorn's own --max-requests is given"

# Settings that went, and what the service does instead: named at start (`unread`), so that
# an old configuration does not lose one without a word (docs/configuration.md says why each
# went).
RETIRED = {
    "EMBEDDER_MICRO_BATCH": "concurrent requests in a worker always share runs",
    "EMBEDDER_SHARED_SESSIONS": "a worker's runners always share one session per model",
    "EMBEDDER_LONE_SESSION": "a lone text runs on a runner's session like any other",
    "EMBEDDER_ORT_ARENA": "ONNX Runtime's arena is always on, shrunk after large runs",
    "EMBEDDER_MALLOC_ARENAS": "a worker always caps glibc's malloc arenas at 2",
    "EMBEDDER_IDLE_TRIM": "a worker hands freed memory back 1 s after its last request",
    "EMBEDDER_MAX_BATCH": "a run has at most 32 rows; EMBEDDER_MAX_BATCH_TOKENS bounds it",
    "EMBEDDER_MAX_REQUESTS": _RECYCLING,
    "EMBEDDER_MAX_REQUESTS_JITTER": _RECYCLING,
    "EMBEDDER_ACCESS_LOG": "EMBEDDER_ACCESS_LOG_JSON=1 is the access log; gunicorn's own is "
    "its --access-logfile (in GUNICORN_CMD_ARGS)",
    "EMBEDDER_CONTROL_SOCKET": "gunicorn's control socket stays off; signals manage the master",
    "EMBEDDER_KEEPALIVE_LINGER_MS": "an HTTP thread waits on a kept-alive connection while "
    "its pool needs no thread",
    "EMBEDDER_WORKER_CLASS": "the worker is always embedder.server.http.worker.GuardedWorker",
}


class _Asked(Mapping[str, str]):
    """An empty environment that notes every name asked of it."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.names.add(key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def variables() -> frozenset[str]:
    """Every variable `Settings.from_env` reads."""
    asked = _Asked()
    Settings.from_env(asked)
    return frozenset(asked.names)


def unread(env: Mapping[str, str]) -> list[str]:
    """A warning for each EMBEDDER_* variable in `env` that no setting reads: one that went
    (and what the service does instead), or a misspelt one (with the nearest name)."""
    known = variables()
    lines = []
    for name in sorted(n for n in env if n.startswith("EMBEDDER_") and n not in known):
        if name in RETIRED:
            lines.append(f"{name} is no longer read (ignored): {RETIRED[name]}")
            continue
        # Compared without the common prefix, which would make every name look alike.
        names = {n.removeprefix("EMBEDDER_"): n for n in sorted(known)}
        near = difflib.get_close_matches(name.removeprefix("EMBEDDER_"), names, n=1, cutoff=0.8)
        hint = f"; did you mean {names[near[0]]}?" if near else ""
        lines.append(f"{name} is not a setting of this service (ignored){hint}")
    return lines
