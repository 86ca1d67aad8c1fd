"""ONNX Runtime sessions sized to a worker's share of the cores.

Sessions must be created after fork (one made before `fork()` loses its thread pool in the
child and can hang on teardown), so nothing here runs at import time.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedder.errors import ModelUnavailable

MIN_ORT_VERSION = (1, 25)
TELEMETRY_OFF = "ORT_DISABLE_TELEMETRY"

log = logging.getLogger("embedder.sessions")


def disable_ort_telemetry(environ: MutableMapping[str, str] = os.environ) -> None:
    """Opt this process and its children out of ONNX Runtime's telemetry, keeping a value the
    user set. Call it where a process is set up, before anything imports onnxruntime: its
    Linux wheel (1.29+) starts telemetry when it is imported and reads the variable only then
    (1.32 here: importing without it writes a device id and an event cache under
    ~/.cache/Microsoft/DeveloperTools/.onnxruntime and starts an uploader thread; setting it
    after the import changes nothing)."""
    if TELEMETRY_OFF not in environ and "onnxruntime" in sys.modules:
        log.warning(
            "onnxruntime was imported before %s was set: its telemetry is on", TELEMETRY_OFF
        )
    environ.setdefault(TELEMETRY_OFF, "1")


@dataclass(frozen=True)
class SessionConfig:
    """How sessions are built. ONNX Runtime's arena is always on, and shrunk after every run
    larger than `warm_tokens` (`Session`): without the shrink it keeps the high-water
    mark of the largest batch for good (the seed's OOM after weeks); without the arena,
    batched requests run slower (docs/performance.md). The memory pattern stays off: shapes
    vary with every batch."""

    threads: int = 1
    memory_pattern: bool = False
    optimization: str = "all"  # disable | basic | extended | all
    shared_weights: bool = False  # session.disable_prepacking: weight pages shared across workers
    streams: int = 1  # runs that share the session at once (OpenVINO plans a stream for each)
    # Runs up to this many tokens (rows x padded length: a lone text of up to 256 tokens, a
    # few short ones) keep their memory, larger ones give it back (`Session`). Past it what
    # a run holds grows fast (attention is quadratic in the length, ORT's arena extends by
    # powers of two), while its compute dwarfs faulting the memory in again
    # (docs/performance.md). 0: every run gives it back.
    warm_tokens: int = 256


def _ort() -> Any:
    if "onnxruntime" not in sys.modules and TELEMETRY_OFF not in os.environ:
        log.warning(
            "importing onnxruntime without %s: its telemetry is on (the entry point should "
            "call embedder.sessions.disable_ort_telemetry first)",
            TELEMETRY_OFF,
        )
    import onnxruntime as ort

    return ort


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


# The execution providers every session is opened with: the CPU's, whatever else the
# installed onnxruntime build has compiled in (`ort_info` names both).
PROVIDERS = ("CPUExecutionProvider",)


def ort_info() -> dict[str, Any]:
    """Version, library path, whether it meets the minimum the engine is tested with, and the
    providers the sessions use (`available`: every one this build has)."""
    ort = _ort()
    version = str(ort.__version__)
    return {
        "version": version,
        "min_version": ".".join(map(str, MIN_ORT_VERSION)),
        "version_ok": _version_tuple(version) >= MIN_ORT_VERSION,
        "library_path": str(Path(ort.__file__).parent),
        "providers": list(PROVIDERS),
        "available_providers": list(ort.get_available_providers()),
        "device": str(ort.get_device()),
    }


def check_ort_version() -> None:
    info = ort_info()
    if not info["version_ok"]:
        raise ModelUnavailable(
            f"onnxruntime {info['version']} is too old; {info['min_version']}+ is required"
        )


_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def session_options(config: SessionConfig) -> Any:
    ort = _ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, config.threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = True
    opts.enable_mem_pattern = config.memory_pattern
    opts.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, _LEVELS[config.optimization]
    )
    opts.log_severity_level = 3
    if config.shared_weights:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    return opts


def run_tokens(feeds: dict[str, Any]) -> int:
    """A run's size as `SessionConfig.warm_tokens` counts it: rows x padded length (the
    largest input; every input of our graphs is [rows, length])."""
    return max((int(getattr(v, "size", 0)) for v in feeds.values()), default=0)


class Session:
    """An ORT session plus the run options its calls use: its arena's memory policy.

    A run larger than `warm_tokens` (rows x padded length over the inputs) asks ORT to shrink
    its arena back afterwards: that keeps most of the arena's speed without holding the
    high-water mark of the largest batch ever seen, which is what grew the seed's RSS until
    the OOM killer came. A run within it (a lone text, a few short ones) keeps the arena as
    it is. Shrinking after every run handed the run's activation buffers back to malloc, so
    the next lone run faulted them in again, and after the worker's idle trim had returned
    them to the system every time: page faults in proportion to hidden size x tokens, on a
    run whose own compute is a few milliseconds (docs/performance.md). What small runs keep
    is bounded by what one such run needs (per runner inside a run), and the next large
    run's shrink releases it too.
    """

    def __init__(self, inner: Any, shrink: Any, keep: Any, warm_tokens: int = 0) -> None:
        self.inner = inner
        self.shrink = shrink
        self.keep = keep
        self.warm_tokens = warm_tokens

    def run(self, outputs: list[str], feeds: dict[str, Any]) -> list[Any]:
        return list(self.inner.run(outputs, feeds, self.options(feeds)))

    def options(self, feeds: dict[str, Any]) -> Any:
        """The run options for these feeds: shrink afterwards unless the run is small."""
        return self.keep if run_tokens(feeds) <= self.warm_tokens else self.shrink

    def get_inputs(self) -> Any:
        return self.inner.get_inputs()

    def get_outputs(self) -> Any:
        return self.inner.get_outputs()


def open_session(path: Path, config: SessionConfig) -> Session:
    """An inference session on the CPU; a missing or corrupt file becomes ModelUnavailable."""
    ort = _ort()
    try:
        inner = ort.InferenceSession(
            str(path), sess_options=session_options(config), providers=list(PROVIDERS)
        )
    except Exception as exc:  # ORT raises its own exception types for bad files
        raise ModelUnavailable(f"cannot load {path.name}: {exc}".splitlines()[0]) from exc
    shrink = ort.RunOptions()
    shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return Session(inner, shrink, ort.RunOptions(), config.warm_tokens)
