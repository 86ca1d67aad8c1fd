"""OpenVINO sessions: one compiled model per model per worker, shared by its runners.

The `openvino` package is optional (`pip install '.[openvino]'`) and imported only when a
session is opened, after fork, like ONNX Runtime: a missing package or a graph OpenVINO cannot
read (the INT8 recipe's com.microsoft operators) raises `Unavailable`, which the caller turns
into a fallback to ONNX Runtime, never into a failed start.

Each runner gets an infer request of its own (OpenVINO's unit of concurrency) from a small
pool; the compiled model has a stream per runner and a thread per core of the worker, and is
not pinned to cores: several workers share the machine. Compiled models are cached on disk
(`CACHE_DIR` under the models root, a folder per graph file version and precision, kept from
growing by `embedder.backends.compiled_cache`), so a restart imports the compiled form instead
of compiling the graph again.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from embedder.backends import compiled_cache
from embedder.planning import OPENVINO_GRID
from embedder.sessions import SessionConfig, run_tokens

log = logging.getLogger("embedder.backends.openvino")

CACHE_DIR = ".openvino-cache"  # in the models root: compiled models (`compiled_cache`)
BF16_CAPABILITY = "BF16"  # in the CPU plugin's OPTIMIZATION_CAPABILITIES on AMX / AVX512_BF16
# An int8 form computes with FP32 activations, which the CPU plugin quantizes per token and
# group of channels (`DYNAMIC_QUANTIZATION_GROUP`) on integer dot-product units: it does so
# only for FP32 activations, never under a BF16 hint.
_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
DYNAMIC_QUANTIZATION_GROUP = 32  # channels per activation scale (per token)


class Unavailable(Exception):
    """OpenVINO cannot serve this graph here (package missing, graph unreadable, ...)."""


def _ov() -> Any:
    try:
        return importlib.import_module("openvino")
    except ImportError as exc:  # also a broken install (a missing shared library)
        raise Unavailable(f"the openvino package is not installed ({exc})") from exc


@cache
def _core() -> Any:
    """One OpenVINO Core per process (made after fork, on first use)."""
    return _ov().Core()


def version() -> str:
    return str(_ov().get_version())


def bf16_units() -> bool:
    """Whether the CPU computes BF16 natively (AMX or AVX512_BF16), as OpenVINO's CPU plugin
    sees it: then it runs BF16 matrix products with FP32 accumulation."""
    caps = _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return BF16_CAPABILITY in {str(c).upper() for c in caps}


@dataclass(frozen=True)
class Port:
    """A graph input or output as ONNX Runtime describes it (what `embedder.tokens` reads)."""

    name: str
    type: str  # "tensor(float)", "tensor(int64)", ...
    shape: list[int | str]  # a dynamic dimension is a string, as ORT names them


_ONNX_TYPES = {"f32": "float", "i64": "int64", "i32": "int32", "f16": "float16", "bf16": "bfloat16"}


def _port(port: Any, name: str | None = None) -> Port:
    elem = str(port.element_type.get_type_name())
    dims: list[int | str] = []
    for i, dim in enumerate(port.partial_shape):
        dims.append(dim.get_length() if dim.is_static else f"d{i}")
    return Port(name or str(port.any_name), f"tensor({_ONNX_TYPES.get(elem, elem)})", dims)


def _named(port: Any) -> list[Port]:
    """An output under each of its tensor names: one the graph made with an Identity (an
    exporter's `logits` after `classifier/out_proj/Add`) has both names in OpenVINO, whose
    `any_name` may be the inner one; a result can be read under either."""
    return [_port(port, name) for name in sorted(port.get_names())] or [_port(port)]


class OpenVinoSession:
    """A compiled model behind ONNX Runtime's session calls. Thread-safe: a run takes an infer
    request from the pool (a new one if every pooled one is busy, so no run ever waits for
    another) and puts it back after.

    The compiled model keeps the intermediate memory of the largest batch it ran until told
    otherwise (as ORT's arena would without its shrink): `release` gives it back, called
    by the worker's idle trim, never during a run, and only once a run larger than
    `warm_tokens` (`SessionConfig`) has grown it since the last release. Releasing what lone
    texts need made the first lone texts after every idle spell fault it back in (the ORT
    arena's same story: docs/performance.md)."""

    backend = "openvino"
    shape_grid = OPENVINO_GRID  # the CPU plugin keeps what it built for every shape it ran

    def __init__(
        self, compiled: Any, requests: int, warm_tokens: int = 0, precision: str = "fp32"
    ) -> None:
        self.compiled = compiled
        self.warm_tokens = warm_tokens
        self.compute_precision = _compute_precision(compiled, precision)
        self._inputs = [_port(p) for p in compiled.inputs]
        self._outputs = [named for p in compiled.outputs for named in _named(p)]
        self._lock = threading.Lock()
        self._idle: list[Any] = []  # made on first need: a runner that never runs costs none
        self._keep = max(1, requests)
        self._busy = 0
        self._grown = False  # a run larger than warm_tokens since the last release

    def run(self, outputs: list[str], feeds: dict[str, Any]) -> list[Any]:
        large = run_tokens(feeds) > self.warm_tokens
        with self._lock:
            request = self._idle.pop() if self._idle else None
            self._busy += 1
        try:
            if request is None:
                request = self.compiled.create_infer_request()
            # The feeds are fresh arrays the caller holds during the run: no copy needed. The
            # results are copies (share_outputs off): the request's tensors are reused.
            result = request.infer(feeds, share_inputs=True)
            return [np.asarray(result[name]) for name in outputs]
        finally:
            with self._lock:
                self._busy -= 1
                self._grown = self._grown or large
                if request is not None and len(self._idle) < self._keep:
                    self._idle.append(request)

    def release(self) -> bool:
        """Give the batch memory back, unless a run is under way (then: False) or no large
        run grew it since the last release. A run that starts meanwhile waits for the release
        to end (milliseconds, once per idle spell)."""
        with self._lock:
            if self._busy:
                return False
            if self._grown:
                self.compiled.release_memory()
                self._grown = False
            return True

    def get_inputs(self) -> list[Port]:
        return self._inputs

    def get_outputs(self) -> list[Port]:
        return self._outputs


def _compute_precision(compiled: Any, asked: str) -> str:
    """What the compiled model computes in: the CPU plugin falls back to FP32 where a BF16
    hint cannot be honoured, and says so in the property it reports back; an int8 form is
    int8 where its matrix products kept int8 weights (it is opened only on CPUs with the
    units that quantize its activations too)."""
    if asked == "int8":
        return "int8" if _int8_products(compiled) else "fp32"
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")  # an element type: bf16, f32
    name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    return "bf16" if name.lower() in ("bf16", "bfloat16") else "fp32"


def _int8_products(compiled: Any) -> bool:
    """Whether the compiled graph's matrix products (FullyConnected) run on int8 weights."""
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "layerType" not in info or str(info["layerType"].astype(str)) != "FullyConnected":
            continue
        if str(info["runtimePrecision"].astype(str)) in ("i8", "u8"):
            return True
    return False


def cache_dir(models_root: Path) -> Path | None:
    """The compiled-model cache in the models root, or None when it cannot be written there
    (a read-only root: then every start compiles)."""
    path = models_root / CACHE_DIR
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("no OpenVINO compiled-model cache: cannot create %s (%s)", path, exc)
        return None
    return path


def compute_properties(precision: str) -> dict[str, Any]:
    """What a compiled model computes, by precision (the backend choice's cache key holds
    them: a change measures again). The plugin quantizes the activations of any matrix
    product with int8 weights (a graph that stores them, behind DequantizeLinear) on CPUs
    with VNNI or AMX, whatever the precision hint: FP32 and BF16 forms ask it not to."""
    return {
        "INFERENCE_PRECISION_HINT": _PRECISION_HINT[precision],
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": DYNAMIC_QUANTIZATION_GROUP if precision == "int8" else 0,
    }


def open_openvino(
    path: Path, config: SessionConfig, precision: str, cache: Path | None = None
) -> OpenVinoSession:
    """`path` compiled for the CPU: `config.streams` concurrent runs of `config.threads`
    threads each, computing in `precision` ("fp32" or "bf16", BF16 only where the CPU has
    BF16 units, FP32 elsewhere; "int8" for a graph of int8 weights, `weights_int8`)."""
    core = _core()
    streams = max(1, config.streams)
    properties: dict[str, Any] = {
        **compute_properties(precision),
        "NUM_STREAMS": streams,
        "INFERENCE_NUM_THREADS": streams * max(1, config.threads),
        "ENABLE_CPU_PINNING": False,
    }
    folder = compiled_cache.use(cache, path, precision) if cache is not None else None
    before = compiled_cache.blobs(folder)
    try:
        compiled = _compile(core, path, properties, folder)
    except Exception as exc:  # OpenVINO raises RuntimeError for most things, with a long text
        raise Unavailable(f"OpenVINO cannot compile {path.name}: {_why(exc)}") from exc
    if folder is not None and cache is not None:
        try:
            compiled_cache.tidy(folder, before)
            compiled_cache.prune(cache)
        except Exception:  # never a failed start for the cache's housekeeping
            log.exception("cannot tidy the compiled-model cache %s", cache)
    return OpenVinoSession(compiled, streams, config.warm_tokens, precision)


def _compile(core: Any, path: Path, properties: dict[str, Any], folder: Path | None) -> Any:
    """From the path, not a read model: with a cache OpenVINO can then skip the graph. A
    compile that fails with the cache (a blob removed or rewritten by another process while
    this one opens it) is tried once without it, so no race on the cache fails a start."""
    if folder is None:
        return core.compile_model(str(path), "CPU", properties)
    try:
        return core.compile_model(str(path), "CPU", {**properties, "CACHE_DIR": str(folder)})
    except Exception as exc:
        compiled = core.compile_model(str(path), "CPU", properties)  # raises if not the cache
        log.warning("compiled %s without its cache %s (with it: %s)", path, folder, _why(exc))
        return compiled


def _why(exc: Exception) -> str:
    """The telling line of OpenVINO's many-line error: its summary when there is one (the
    operators it could not convert), else the last line that is not a source location."""
    lines = [ln.strip(" -") for ln in str(exc).splitlines() if ln.strip()]
    if "Summary:" in lines and lines.index("Summary:") + 1 < len(lines):
        return lines[lines.index("Summary:") + 1]
    said = [ln for ln in lines if not ln.startswith(("Exception from", "Check "))]
    return said[-1] if said else type(exc).__name__
