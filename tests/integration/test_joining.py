"""A worker that joins a serving instance (a replacement, a reload) loads its models before it
accepts. It waited for that load in silence: no heartbeat to the master, no end to the wait,
deaf to the master's SIGTERM. It now tells the master it lives while it loads (the master
restarts a worker silent for EMBEDDER_TIMEOUT), stops waiting when told to exit, and gives up
waiting after `bootstrap.JOIN_WAIT` (unit-tested: too long for a live test).

A slow load is made here without any clock: the model's file is missing and its file lock is
held by the test, as another process building that file would hold it, for as long as the test
likes. gunicorn's heartbeat is the modification time of the worker's unlinked temporary file,
read through /proc."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock
import psutil
import pytest

from tests.integration import server as srv
from tests.polling import wait_until

pytestmark = pytest.mark.integration

MODEL = "all-minilm-l6-v2-int8"
TIMEOUT = 2  # EMBEDDER_TIMEOUT, seconds
GRACEFUL = 60  # EMBEDDER_GRACEFUL_TIMEOUT, seconds
JOINING = "joining a serving instance: loading models first"  # bootstrap.build_app's log line
# A bound, not an expectation: the heartbeat comes every second at most, and a worker told to
# exit leaves within one; the fault these tests are for made it never, or GRACEFUL seconds.
SLOW = 20.0


def start(tmp_path: Path, built_root: Path) -> srv.Server:
    root = tmp_path / "models"
    shutil.copytree(built_root, root, ignore=shutil.ignore_patterns(".locks"))
    env = {
        "EMBEDDER_MODELS": MODEL,
        "EMBEDDER_TIMEOUT": str(TIMEOUT),
        "EMBEDDER_GRACEFUL_TIMEOUT": str(GRACEFUL),
    }
    server = srv.start(tmp_path, root, workers=1, extra_env=env)
    server.wait_ready()
    return server


@pytest.fixture
def server(tmp_path: Path, built_root: Path) -> Iterator[srv.Server]:
    s = start(tmp_path, built_root)
    try:
        yield s
    finally:
        s.stop(GRACEFUL + 30)


def heartbeat(pid: int) -> float:
    """The worker's last heartbeat: the mtime of gunicorn's WorkerTmp file (open, unlinked)."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if "wgunicorn-" in os.readlink(fd):
                return fd.stat().st_mtime
        except OSError:
            continue
    raise LookupError(f"no heartbeat file open in process {pid}")


@contextmanager
def joining(server: srv.Server) -> Iterator[int]:
    """The only worker killed; its replacement joins and waits for its model's file, missing
    and locked, until the block ends (the file back, the lock free). Yields its pid."""
    (victim,) = server.worker_pids()
    root = Path(server.env["EMBEDDER_MODELS_ROOT"])
    onnx = root / MODEL / "model_int8.onnx"
    aside = onnx.with_name("aside.onnx")
    with filelock.FileLock(root / ".locks" / f"{MODEL}.lock"):
        onnx.rename(aside)
        try:
            os.kill(victim, signal.SIGKILL)
            wait_until("the replacement joining", lambda: server.log.read_text().count(JOINING))
            (pid,) = server.worker_pids()
            assert pid != victim
            yield pid
        finally:
            aside.rename(onnx)


def test_a_joining_worker_keeps_its_heartbeat_while_it_loads(server: srv.Server) -> None:
    """Its heartbeat goes on for several EMBEDDER_TIMEOUTs of a held load; the master never
    times it out, and once the file is there the same worker serves."""
    with joining(server) as pid:
        beats: set[float] = set()

        def beating_for_long() -> bool:
            beats.add(heartbeat(pid))
            return len(beats) > 2 and max(beats) - min(beats) > 2 * TIMEOUT

        wait_until("heartbeats over two timeouts", beating_for_long, timeout=SLOW + 2 * TIMEOUT)
    wait_until(
        "the replacement serving",
        lambda: server.worker_pids() == [pid] and server.rpc("status")["result"]["status"] == "ok",
        tolerate=(OSError,),
    )
    text = server.log.read_text()
    print(f"\njoining: {len(beats)} heartbeats seen over {max(beats) - min(beats):.1f} s")
    assert "WORKER TIMEOUT" not in text, text[-3000:]
    assert text.count(JOINING) == 1, "the joining worker was replaced while it loaded"
    status, body = server.json(
        "rest.sock", "POST", "/v1/embeddings", {"input": "x", "model": MODEL}
    )
    assert status == 200 and len(body["data"][0]["embedding"]) == 384


def test_a_joining_worker_leaves_when_told_to(server: srv.Server) -> None:
    """SIGTERM to the master while a worker is joining: the worker exits at once, not after
    the graceful timeout at the master's SIGKILL."""
    with joining(server) as pid:
        t0 = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(GRACEFUL + 30)
        took = time.monotonic() - t0
    print(f"\nSIGTERM while joining: master exited {code} after {took:.1f} s")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert took < SLOW, f"the joining worker held the stop for {took:.1f} s"
    assert code == 0
    assert f"(pid:{pid}) was sent SIGKILL" not in server.log.read_text()
