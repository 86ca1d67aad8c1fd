"""Faults against a real gunicorn, one test per row of the matrix:

| fault                                  | what must hold                                         |
|----------------------------------------|--------------------------------------------------------|
| a worker SIGKILLed under load          | a new one is ready (status lists 2 ok workers, a new   |
|                                        | pid); only requests in flight at the kill may fail     |
| a worker SIGKILLed while degraded      | the replacement serves too                             |
| SIGTERM to the master, requests in     | every one of them completes with 200; sockets removed; |
| flight                                 | exit 0 within the graceful timeout                     |
| SIGHUP under light continuous load     | new worker pids, no failed request, every listener     |
|                                        | (rest.sock, rpc.sock, admin.sock, TCP) still answers   |
| a built model file damaged at start    | the log names it, it is built again, the model serves  |
| a model computing NaN (damaged weights | its first request gets 503 model_broken / -32010 and   |
| that pass every check)                 | health "degraded" names it, the log once; the others   |
|                                        | serve                                                  |
| models root not creatable              | a clear error in status and health; nothing crashes    |
| socket directory not creatable         | gunicorn exits non-zero naming the path                |
| load above capacity                    | fast 503 + Retry-After / -32005, bounded latency of    |
|                                        | what is served, /health keeps answering                |

All load is bounded in count and time, goes to loopback or unix sockets, and stops by itself.
Figures (failures, latencies) are printed: `pytest -s` shows them. Where the product falls
short of a row, the test fails.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import stat
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from embedder.tools.corpus import corpus
from tests.damage import as_built, spoil_weight
from tests.integration import server as srv
from tests.polling import PATIENCE, wait_until

pytestmark = pytest.mark.integration

LONG = "The quick brown fox jumps over the lazy dog. " * 40  # past every model's window
TEXTS = corpus(64, seed=7)
SOCKETS = ("rest.sock", "rpc.sock", "admin.sock")
JOINING = "joining a serving instance: loading models first"  # bootstrap.build_app's log line

# (via, path, JSON body) of one request; a load calls a Maker with the request's number.
Request = tuple[str, str, Any]
Maker = Callable[[int], Request]


@dataclass
class Shot:
    """One request of a load: when it ran and how it ended."""

    via: str
    started: float
    ended: float
    status: int  # HTTP status; 0 when the connection failed
    code: Any = None  # the error's code: REST error.code, or the JSON-RPC error code
    retry_after: str | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.code is None and not self.error

    @property
    def latency(self) -> float:
        return self.ended - self.started


def send(server: srv.Server, via: str, path: str, body: Any) -> Shot:
    """One request, classified; a transport failure is a Shot with status 0, not an exception."""
    t0 = time.monotonic()
    try:
        status, headers, raw = server.request(via, "POST", path, body)
    except OSError as exc:  # reset, refused, timed out: the request failed
        return Shot(via, t0, time.monotonic(), 0, error=f"{type(exc).__name__}: {exc}")
    shot = Shot(via, t0, time.monotonic(), status, retry_after=headers.get("retry-after"))
    try:
        doc = json.loads(raw) if raw else None
    except ValueError:
        shot.error = f"not JSON: {raw[:120]!r}"
        return shot
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        shot.code = err.get("code")
    return shot


class Load:
    """`threads` threads, each sending at most `per_thread` requests until `seconds` pass or
    `stop()` is called; `in_flight()` counts the requests sent and not yet answered."""

    def __init__(
        self,
        server: srv.Server,
        make: Maker,
        *,
        threads: int,
        per_thread: int,
        seconds: float,
        pause: float = 0.0,
    ) -> None:
        self.server, self.make, self.pause = server, make, pause
        self.per_thread, self.deadline = per_thread, time.monotonic() + seconds
        self.shots: list[Shot] = []
        self._lock = threading.Lock()
        self._flying = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, index: int) -> None:
        for n in range(self.per_thread):
            if self._stop.is_set() or time.monotonic() > self.deadline:
                return
            via, path, body = self.make(index * self.per_thread + n)
            with self._lock:
                self._flying += 1
            shot = send(self.server, via, path, body)
            with self._lock:
                self._flying -= 1
                self.shots.append(shot)
            if self.pause:
                self._stop.wait(self.pause)

    def in_flight(self) -> int:
        with self._lock:
            return self._flying

    def done(self) -> int:
        with self._lock:
            return len(self.shots)

    def stop(self, timeout: float = 90.0) -> list[Shot]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        with self._lock:
            return list(self.shots)


def wait_for(what: str, check: Callable[[], bool], timeout: float = PATIENCE) -> float:
    """Poll `check` until it holds; the time it took. OSError means "not yet": a listener can
    be between workers."""
    return wait_until(what, check, timeout, step=0.05, tolerate=(OSError,))


def in_flight(server: srv.Server, route: str) -> float:
    """Requests on `route` the workers are serving now (the server's own gauge)."""
    text = server.request("rest.sock", "GET", "/metrics")[2].decode()
    prefix = f'embedder_requests_in_flight{{route="{route}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def settled_health(server: srv.Server) -> dict[str, Any]:
    """/health once the first load of every model has ended (whatever its outcome)."""
    server.wait_sockets()

    def settled() -> bool:
        return bool(server.json("rest.sock", "GET", "/health")[1]["status"] != "starting")

    wait_for("loading done", settled)
    body: dict[str, Any] = server.json("rest.sock", "GET", "/health")[1]
    return body


def status_workers(server: srv.Server) -> dict[int, str]:
    """pid -> state from the `status` RPC (any worker answers for all)."""
    result = server.rpc("status")["result"]
    return {int(pid): state for pid, state in result["workers"].items()}


@pytest.fixture
def started() -> Iterator[list[srv.Server]]:
    """Servers a test starts; each is stopped (SIGTERM, then SIGKILL) whatever happens."""
    servers: list[srv.Server] = []
    yield servers
    for s in servers:
        s.stop()


def embed(model: str, texts: list[str]) -> Callable[[str], Request]:
    """A request for `texts` on `model` in the shape of the listener it goes to."""

    def make(via: str) -> Request:
        if via == "rpc.sock":
            msg = {"jsonrpc": "2.0", "method": "embed", "params": {"texts": texts, "model": model}}
            return via, "/rpc", {**msg, "id": 1}
        return via, "/v1/embeddings", {"input": texts, "model": model, "encoding_format": "base64"}

    return make


# --- worker lifecycle -----------------------------------------------------------------------


def test_worker_killed_under_load_is_replaced(
    tmp_path: Path, built_root: Path, started: list[srv.Server]
) -> None:
    server = srv.start(tmp_path, built_root, workers=2)
    started.append(server)
    server.wait_ready()
    vias = ("rest.sock", "tcp")
    make_embed = embed("paraphrase-minilm-l3-v2", TEXTS[:8])
    with Load(
        server, lambda i: make_embed(vias[i % 2]), threads=4, per_thread=400, seconds=4 * PATIENCE
    ) as load:
        wait_for("load running", lambda: load.done() >= 12)
        before = status_workers(server)
        assert len(before) == 2 and set(before.values()) == {"ok"}
        victim = max(before)
        in_flight = load.in_flight()
        os.kill(victim, signal.SIGKILL)
        t_kill = time.monotonic()  # after kill() returns the victim runs no more code
        took = wait_for(
            "a replacement worker ready",
            lambda: (
                len(w := status_workers(server)) == 2
                and victim not in w
                and set(w.values()) == {"ok"}
            ),
        )
        t_ready = time.monotonic()
        after_ready = load.done()
        wait_for("requests after the replacement", lambda: load.done() >= after_ready + 12)
    shots = load.stop()
    failed = [s for s in shots if not s.ok]
    late = [s for s in shots if s.started >= t_ready]
    print(
        f"\nworker kill: {len(shots)} requests, {len(failed)} failed "
        f"({sorted({f.error or str(f.status) for f in failed})}), {in_flight} in flight at the "
        f"kill, replacement ready in {took:.1f} s, {len(late)} sent after it, all ok"
    )
    # Only requests in flight at the kill may fail: sent before kill() returned, and answered
    # (or cut) after it was sent.
    assert len(failed) <= in_flight, [f.error or f.status for f in failed]
    assert all(f.started < t_kill for f in failed), [f for f in failed if f.started >= t_kill]
    assert len(late) >= 12 and all(s.ok for s in late)
    # The replacement found a serving sibling, so it loaded its models before accepting.
    assert server.log.read_text().count(JOINING) == 1
    now = status_workers(server)
    new = set(now) - set(before)
    assert len(new) == 1 and set(now) == (set(before) - {victim}) | new
    pids = {w["pid"] for w in server.rpc("mem_info")["result"]["workers"]}
    assert pids == set(now), "mem_info lists the replacement too"


def test_worker_killed_while_degraded_is_replaced(
    tmp_path: Path, started: list[srv.Server]
) -> None:
    """A degraded service (models root not creatable: the package-shipped levels serve, the
    built ones fail and are retried) loses a worker: the replacement must serve too."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    # A worker stuck loading ignores SIGTERM: a short graceful timeout bounds the teardown.
    env = {"EMBEDDER_GRACEFUL_TIMEOUT": "5"}
    server = srv.start(tmp_path, blocker / "models", workers=2, extra_env=env)
    started.append(server)
    server.wait_sockets()
    wait_for(
        "both workers degraded",
        lambda: set((w := status_workers(server)).values()) == {"degraded"} and len(w) == 2,
    )
    before = status_workers(server)
    victim = max(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(
        "a replacement on the board",
        lambda: len(w := status_workers(server)) == 2 and victim not in w,
    )
    (new,) = set(status_workers(server)) - set(before)
    answered: set[int] = set()

    def new_one_answers() -> bool:
        answered.add(server.rpc("mem_info")["result"]["answered_by"])
        return new in answered

    # The replacement loads its models, then accepts: sooner or later it answers too.
    wait_for("the replacement answering", new_one_answers)
    states = status_workers(server)
    print(f"\ndegraded, worker killed: board {states}; answered by {sorted(answered)}")
    assert states[new] == "degraded", states


def test_sigterm_completes_requests_in_flight(
    tmp_path: Path, built_root: Path, started: list[srv.Server]
) -> None:
    """Several large batched requests are being served when the master gets SIGTERM: each still
    completes with 200, and gunicorn exits 0 within its graceful timeout.

    Nothing here depends on the machine's speed: the requests are sized from one measured in
    the test (each lasts several seconds of compute, whatever the CPU), and SIGTERM is sent
    once the server's own gauge shows all of them being served."""
    graceful = 120
    model = "paraphrase-minilm-l3-v2"
    server = srv.start(
        tmp_path,
        built_root,
        workers=2,
        extra_env={
            "EMBEDDER_MODELS": model,
            "EMBEDDER_GRACEFUL_TIMEOUT": str(graceful),
            "EMBEDDER_MAX_INPUTS": "4096",
            "EMBEDDER_MAX_QUEUE_WAIT": "3600",  # queued behind each other, never refused
        },
    )
    started.append(server)
    server.wait_ready()
    probe = send(server, *embed(model, [LONG] * 64)("rest.sock"))
    assert probe.ok, probe
    # ~4 s of compute per request alone; 4 of them share 2 single-core workers.
    texts = min(4096, max(64, math.ceil(64 * 4.0 / probe.latency)))
    make_embed = embed(model, [LONG] * texts)
    vias = ("rest.sock", "rpc.sock", "tcp", "rest.sock")
    routes = {"/v1/embeddings": 3, "/rpc": 1}
    with Load(
        server, lambda i: make_embed(vias[i]), threads=len(vias), per_thread=1, seconds=PATIENCE
    ) as load:
        wait_for(
            "every request inside a worker",
            lambda: all(in_flight(server, r) == n for r, n in routes.items()),
        )
        t_term = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(graceful + 30)
        exited = time.monotonic() - t_term
    shots = load.stop()
    print(
        f"\nSIGTERM: {len(shots)} requests of {texts} texts (one of 64 took "
        f"{probe.latency:.2f} s), {sum(s.ok for s in shots)} completed with 200, exit {code} "
        f"after {exited:.1f} s"
    )
    assert code == 0 and exited < graceful, f"exit code {code} after {exited:.1f} s"
    assert [s.status for s in shots] == [200] * len(vias), [(s.status, s.error) for s in shots]
    assert all(s.ok for s in shots)
    early = [round(t_term - s.ended, 3) for s in shots if s.ended <= t_term]
    assert not early, f"requests had ended {early} s before SIGTERM"
    for name in SOCKETS:
        assert not server.sock(name).exists(), f"{name} left behind"


def listeners_answer(server: srv.Server) -> None:
    """Every listener serves what it should: REST on rest.sock and TCP, JSON-RPC on rpc.sock,
    the dashboard and REST on admin.sock."""
    for via in ("rest.sock", "tcp", "admin.sock"):
        status, body = server.json(via, "GET", "/health")
        assert status == 200 and body["status"] == "ok", (via, body)
        shot = send(server, *embed("paraphrase-minilm-l3-v2", ["after the reload"])(via))
        assert shot.ok, (via, shot)
    assert server.rpc("health")["result"]["status"] == "ok"
    assert send(server, *embed("paraphrase-minilm-l3-v2", ["rpc"])("rpc.sock")).ok
    assert server.request("admin.sock", "GET", "/")[0] == 200


def test_sighup_replaces_workers_without_a_failed_request(
    tmp_path: Path, built_root: Path, started: list[srv.Server]
) -> None:
    server = srv.start(tmp_path, built_root, workers=2)
    started.append(server)
    server.wait_ready()
    bind_before = server.log.read_text().count("Listening at")
    vias = ("rest.sock", "rpc.sock", "tcp", "admin.sock")
    make_embed = embed("paraphrase-minilm-l3-v2", TEXTS[:2])
    with Load(
        server,
        lambda i: make_embed(vias[i % 4]),
        threads=2,
        per_thread=2000,
        seconds=4 * PATIENCE,
        pause=0.05,
    ) as load:
        wait_for("load running", lambda: load.done() >= 10)
        old = set(status_workers(server))
        server.proc.send_signal(signal.SIGHUP)
        took = wait_for(
            "new workers ready",
            lambda: (
                len(w := status_workers(server)) == 2
                and not set(w) & old
                and set(w.values()) == {"ok"}
            ),
        )
        after = load.done()
        wait_for("requests after the reload", lambda: load.done() >= after + 20)
    shots = load.stop()
    failed = [s for s in shots if not s.ok]
    worst = max(s.latency for s in shots)
    print(
        f"\nSIGHUP: {len(shots)} requests, {len(failed)} failed, new workers ready in "
        f"{took:.1f} s, slowest request {worst:.2f} s"
    )
    assert {s.via for s in shots} == set(vias)
    listeners_answer(server)
    assert server.log.read_text().count("Listening at") == bind_before, "listeners were rebound"
    for name in SOCKETS:
        assert stat.S_IMODE(server.sock(name).stat().st_mode) & 0o117 == 0
    # No request is dropped or refused: new workers load their models before they accept.
    assert not failed, failed


# --- bad files and directories ----------------------------------------------------------------


def _copy_root(built_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(built_root, root, ignore=shutil.ignore_patterns(".locks"))
    return root


def test_a_damaged_built_file_is_built_again_at_start(
    tmp_path: Path, built_root: Path, started: list[srv.Server]
) -> None:
    int8_id = "all-minilm-l6-v2-int8"
    root = _copy_root(built_root, tmp_path)
    int8 = root / int8_id / "model_int8.onnx"
    size = int8.stat().st_size
    int8.unlink()  # a new file: never write through to the shared root
    int8.write_bytes(os.urandom(4096))
    server = srv.start(tmp_path, root, workers=1)
    started.append(server)
    health = settled_health(server)
    assert health["status"] == "ok", health
    log = server.log.read_text()
    assert f"{int8}: it is 4096 bytes where the record of its build says {size}" in log
    assert int8.stat().st_size == size
    res = server.rpc("embed", {"texts": ["x"], "quality": 2, "format": "float"})["result"]
    assert res["model"] == int8_id and all(math.isfinite(v) for v in res["embeddings"][0])


def test_a_model_computing_nan_degrades_only_that_model(
    tmp_path: Path, built_root: Path, started: list[srv.Server]
) -> None:
    """all-minilm-l6-v2 with 4 KB of a weight overwritten with 0xFF (NaN) and a build record
    that matches those bytes (a recipe or an upload that made them): it loads, and computes
    NaN. Before, every listener answered 200 with null values and health said "ok"."""
    broken, cosine = "all-minilm-l6-v2", "minilm-cosine-rerank"
    root = _copy_root(built_root, tmp_path)
    spoil_weight(root / broken / "model.onnx")
    as_built(root / broken / "model.onnx")
    server = srv.start(tmp_path, root, workers=1)
    started.append(server)
    assert settled_health(server)["status"] == "ok"  # the damage shows only in what it computes

    status, headers, raw = server.request(
        "rest.sock", "POST", "/v1/embeddings", {"input": "x", "model": broken}
    )
    error = json.loads(raw)["error"]
    assert status == 503 and error["code"] == "model_broken", raw
    assert "retry-after" not in headers, "waiting will not mend damaged weights"
    assert f"model {broken} computed NaN or Inf" in error["message"]
    health = server.json("rest.sock", "GET", "/health")[1]
    assert health["status"] == "degraded" and set(health["errors"]) == {broken, cosine}, health
    assert (
        broken not in health["models_loaded"] and "all-minilm-l6-v2-int8" in health["models_loaded"]
    )
    rpc = server.rpc("embed", {"texts": ["x"], "quality": 4})["error"]
    assert rpc["code"] == -32010 and rpc["data"]["code"] == "model_broken"
    docs = [{"id": "a", "text": "cats"}, {"id": "b", "text": "stocks"}]
    assert server.rpc("rerank", {"query": "kitten", "docs": docs})["error"]["code"] == -32010
    shot = send(server, "tcp", "/v1/embeddings", {"input": ["x"], "model": broken})
    assert shot.status == 503 and shot.code == "model_broken"
    # The others serve: every other level, by id and by level.
    for level in (1, 2, 3):
        assert "result" in server.rpc("embed", {"texts": ["x"], "quality": level}), level
    model = server.rpc("status")["result"]["models"]
    state = next(m for m in model if m["id"] == broken)
    assert state["state"] == "error" and "computed NaN or Inf" in state["error"]
    assert server.log.read_text().count(f"model {broken} failed:") == 1


def test_models_root_not_creatable_is_reported(tmp_path: Path, started: list[srv.Server]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    root = blocker / "models"
    server = srv.start(tmp_path, root, workers=1)
    started.append(server)
    health = settled_health(server)
    print(f"\nmodels root under a file: health {health}")
    assert health["status"] in ("degraded", "error")
    assert health["errors"], health
    for model, message in health["errors"].items():
        assert str(blocker) in message, (model, message)
    status = server.rpc("status")["result"]
    assert status["models_root"] == str(root)
    failed = [m for m in status["models"] if m["state"] == "error"]
    assert failed and all(str(blocker) in m["error"] for m in failed)
    assert server.proc.poll() is None, "the service keeps running"
    out = server.request(
        "rest.sock", "POST", "/v1/embeddings", {"input": "x", "model": failed[0]["id"]}
    )
    assert out[0] == 503 and "Traceback" not in out[2].decode()


def test_socket_dir_not_creatable_exits_naming_it(tmp_path: Path, built_root: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    server = srv.start(tmp_path, built_root, workers=1, tcp=False, socket_root=blocker)
    try:
        code = server.proc.wait(60)
    finally:
        server.stop()
    log = server.log.read_text()
    print(f"\nsocket dir under a file: exit {code}; {log.strip().splitlines()[-1]}")
    assert code != 0
    assert f"cannot create socket directory {blocker / 'hero_embedder_provider'}" in log, log
    assert "Traceback" not in log


# --- overload ---------------------------------------------------------------------------------


def test_overload_gives_fast_503_and_health_answers(
    tmp_path: Path, built_root: Path, started: list[srv.Server]
) -> None:
    """One worker, one core, a queue bound of 1 s, and 12 clients each sending 64 long texts
    back to back: far more than the worker can compute. Work beyond the bound is refused at
    once (REST 503 + Retry-After, JSON-RPC -32005), what is admitted is served within a
    bounded time, and /health answers all along."""
    model = "paraphrase-minilm-l3-v2"
    server = srv.start(
        tmp_path,
        built_root,
        workers=1,
        extra_env={"EMBEDDER_MODELS": model, "EMBEDDER_MAX_QUEUE_WAIT": "1"},
    )
    started.append(server)
    server.wait_ready()
    make_embed = embed(model, [LONG] * 64)
    warm = send(server, *make_embed("rest.sock"))  # the batcher learns its rate
    assert warm.ok
    health: list[float] = []
    health_failures: list[str] = []
    stop = threading.Event()

    def probe() -> None:
        for _ in range(600):  # bounded: at most 600 probes
            if stop.is_set():
                return
            t0 = time.monotonic()
            try:
                status, body = server.json("rest.sock", "GET", "/health")
            except OSError as exc:
                health_failures.append(repr(exc))
                continue
            health.append(time.monotonic() - t0)
            if status != 200 or body["status"] != "ok":
                health_failures.append(f"{status} {body}")
            stop.wait(0.1)

    prober = threading.Thread(target=probe, daemon=True)
    vias = ("rest.sock", "rpc.sock")
    with Load(
        server, lambda i: make_embed(vias[i % 2]), threads=12, per_thread=40, seconds=8, pause=0.05
    ) as load:
        prober.start()
        time.sleep(8)
    shots = load.stop()
    stop.set()
    prober.join(30)
    ok = [s for s in shots if s.ok]
    rest_503 = [s for s in shots if s.via == "rest.sock" and s.status == 503]
    rpc_busy = [s for s in shots if s.via == "rpc.sock" and s.code == -32005]
    other = [s for s in shots if not s.ok and s not in rest_503 and s not in rpc_busy]
    refused = rest_503 + rpc_busy
    served = sorted(s.latency for s in ok) or [0.0]
    fast = sorted(s.latency for s in refused) or [0.0]
    p50_health = statistics.median(health or [0.0])
    print(
        f"\noverload: {len(shots)} requests, {len(ok)} served (p50 {statistics.median(served):.2f}"
        f" s, max {served[-1]:.2f} s, warm-up run {warm.latency:.2f} s), {len(rest_503)} REST "
        f"503, {len(rpc_busy)} RPC -32005 (p50 {statistics.median(fast) * 1000:.0f} ms, max "
        f"{fast[-1] * 1000:.0f} ms); /health x{len(health)}: p50 {p50_health * 1000:.0f} ms, "
        f"max {max(health or [0.0]) * 1000:.0f} ms"
    )
    assert not other, [(s.via, s.status, s.code, s.error) for s in other]
    assert rest_503 and rpc_busy and ok
    assert all(
        s.code == "overloaded" and s.retry_after and int(s.retry_after) >= 1 for s in rest_503
    )
    # Measured against the warm-up run of the same request on the same machine, not against
    # the clock: refusals come back quicker than what is served; what is admitted waits for at
    # most ~2 runs (running + queued), not for the whole backlog of 12 clients (~12 runs);
    # /health never waits behind the backlog either. Generous factors for a noisy machine.
    assert statistics.median(fast) < statistics.median(served), "refusals were not quicker"
    assert served[-1] < 6 * max(warm.latency, 1.0) + 5, f"a request was served after {served[-1]}"
    assert not health_failures, health_failures[:3]
    assert len(health) >= 5, f"only {len(health)} health probes answered"
    assert max(health) < 3 * max(warm.latency, 1.0) + 2, f"/health took {max(health):.2f} s"
