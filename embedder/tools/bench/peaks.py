"""What the machine itself can do, and where a model's time goes.

The limit (the engine on the whole corpus) says how fast a level is, not how close it is to
the machine: INT8 vs FP32 of one model differs ~2x between CPUs with AMX, AVX-512 VNNI or
plain AVX2. So the run measures ONNX Runtime's own GEMM (FP32 `MatMul`, integer
`MatMulInteger`, u8 x s8 and u8 x u8) at model-like shapes, on one thread and on all cores,
and each level's model work per token, so the report gives the share of the matching peak.
An ORT profile of one batch per level (1 thread) gives the top ops and their share.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# (rows, inner, columns): tokens x hidden x (FFN width, hidden) as in MiniLM/bge-small
SHAPES = ((1024, 384, 1536), (1024, 1536, 384))
KINDS = ("fp32", "u8s8", "u8u8")


def _gemm_model(kind: str, k: int, n: int) -> bytes:
    rng = np.random.default_rng(0)
    if kind == "fp32":
        a = helper.make_tensor_value_info("A", TensorProto.FLOAT, ["m", k])
        w = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    else:
        a = helper.make_tensor_value_info("A", TensorProto.UINT8, ["m", k])
        signed = kind == "u8s8"
        b = rng.integers(-127, 128, (k, n)) if signed else rng.integers(0, 256, (k, n))
        w = numpy_helper.from_array(b.astype(np.int8 if signed else np.uint8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        out = helper.make_tensor_value_info("Y", TensorProto.INT32, None)
    graph = helper.make_graph([node], "gemm", [a], [out], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def _session(model: bytes | str, threads: int, profile: str | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    # The kinds run in turn: a finished session's pool threads spinning for the next run took
    # the cores from the other kinds' runs (all-core peaks read below one core's).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def _time_runs(sessions: list[Any], a: Any, seconds: float) -> tuple[int, float]:
    """(runs, seconds): each session run in a loop by its own thread for ~`seconds`, after
    one untimed run each, all starting together; a run's error reaches the caller."""
    for sess in sessions:
        sess.run(None, {"A": a})  # warm-up, as the single-session figures drop their first
    start = threading.Barrier(len(sessions) + 1)
    counts = [0] * len(sessions)
    errors: list[BaseException] = []
    until = [0.0]

    def loop(i: int) -> None:
        try:
            start.wait(timeout=60)
            while time.monotonic() < until[0] or counts[i] < 2:
                sessions[i].run(None, {"A": a})
                counts[i] += 1
        except BaseException as e:  # reported below, not lost with the thread
            errors.append(e)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(len(sessions))]
    for w in workers:
        w.start()
    began = time.perf_counter()
    until[0] = time.monotonic() + seconds
    start.wait(timeout=60)
    for w in workers:
        w.join(timeout=seconds + 120)
    if errors:
        raise errors[0]
    if any(w.is_alive() for w in workers):
        raise TimeoutError(f"a GEMM run took over {seconds + 120:.0f} s")
    return sum(counts), time.perf_counter() - began


def gemm_peaks(threads: tuple[int, ...], seconds: float = 0.6) -> dict[str, Any]:
    """GFLOP/s (GOP/s for integers) per kind and thread count: the best shape's median of
    ~`seconds` of runs; kinds alternate shape by shape so they share the machine's mood.
    The Nx1 rows are total work over ~`seconds` of wall time, all sessions running at once.

    On N > 1 cores also N single-thread sessions at once, one per thread (`mode` "Nx1"), as
    the limit's Nx1 layout and a worker's runners compute; `peak_gops[kind@N]` is the better
    of that and one N-thread session, so a level's share compares like with like."""
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(1)
    for t in threads:
        for m, k, n in SHAPES:
            feeds = {
                "fp32": rng.standard_normal((m, k)).astype(np.float32),
                "int": rng.integers(0, 256, (m, k)).astype(np.uint8),
            }
            sessions = {kind: _session(_gemm_model(kind, k, n), t) for kind in KINDS}
            times: dict[str, list[float]] = {kind: [] for kind in KINDS}
            until = time.monotonic() + seconds * len(KINDS)
            while time.monotonic() < until or min(len(v) for v in times.values()) < 3:
                for kind, sess in sessions.items():
                    a = feeds["fp32" if kind == "fp32" else "int"]
                    began = time.perf_counter()
                    sess.run(None, {"A": a})
                    times[kind].append(time.perf_counter() - began)
            for kind, ts in times.items():
                gops = 2.0 * m * k * n / float(np.median(ts[1:])) / 1e9
                rows.append({"kind": kind, "threads": t, "shape": [m, k, n], "gops": gops})
            if t == 1:
                continue
            for kind in KINDS:  # one single-thread session per core, all at once
                singles = [_session(_gemm_model(kind, k, n), 1) for _ in range(t)]
                runs, took = _time_runs(
                    singles, feeds["fp32" if kind == "fp32" else "int"], seconds
                )
                gops = 2.0 * m * k * n * runs / took / 1e9
                shape = [m, k, n]
                rows.append(
                    {"kind": kind, "threads": t, "shape": shape, "gops": gops, "mode": f"{t}x1"}
                )
    peaks: dict[str, float] = {}
    for row in rows:
        key = f"{row['kind']}@{row['threads']}"
        peaks[key] = max(peaks.get(key, 0.0), row["gops"])
    return {"shapes": rows, "peak_gops": peaks}


def model_ops_per_token(path: Path) -> float:
    """2 x K x N over the weight MatMuls (FP32 or integer): the GEMM work one token costs.
    Attention's score/context products grow with the text's length and are left out."""
    model = onnx.load(str(path), load_external_data=False)
    dims = {i.name: tuple(i.dims) for i in model.graph.initializer}
    total = 0.0
    for node in model.graph.node:
        if node.op_type in ("MatMul", "MatMulInteger", "MatMulIntegerToFloat"):
            shape = dims.get(node.input[1])
            if shape is not None and len(shape) == 2:
                total += 2.0 * shape[0] * shape[1]
    return total


def op_profile(path: Path, feeds: dict[str, Any], runs: int = 3, top: int = 8) -> list[Any]:
    """[(op type, share of kernel time)] of `runs` runs of `feeds` on one thread, largest first."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = _session(str(path), 1, profile=os.path.join(tmp, "p"))
        names = {i.name for i in sess.get_inputs()}
        feed = {k: v for k, v in feeds.items() if k in names}
        for _ in range(runs + 1):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    by_op: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += int(e["dur"])
    total = sum(by_op.values()) or 1
    return [[op, dur / total] for op, dur in by_op.most_common(top)]


def share_of_peak(
    ops_per_token: float, tokens_per_s: float, precision: str, peaks: dict[str, float], threads: int
) -> dict[str, Any]:
    """The model's achieved G(FL)OP/s and its share of the matching GEMM peak on `threads`."""
    from embedder.prepare.quantize import signed_weights_are_exact

    # the integer kernel the INT8 recipe picks on this CPU (u8 x u8 where u8 x s8 saturates)
    kind = "fp32" if precision == "fp32" else "u8s8" if signed_weights_are_exact() else "u8u8"
    achieved = ops_per_token * tokens_per_s / 1e9
    peak = peaks.get(f"{kind}@{threads}") or 0.0
    out: dict[str, Any] = {"achieved_gops": achieved, "peak_kind": kind, "peak_gops": peak}
    out["share"] = achieved / peak if peak else None
    return out
