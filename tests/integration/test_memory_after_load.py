"""Idle memory comes back after large requests (issue 15): a worker's RSS returns to within
20 % of its post-load baseline once the request is over, instead of keeping the request's
token encodings (~1 GiB for 2048 texts of 8,000 characters) until the next one.

The bound: before the fix this request left RSS at 309 MiB over a 190 MiB baseline (+63 %).
With it, what stays is allocator residue, 1-22 MiB over a 170-188 MiB baseline in five
quiet runs (+1 % to +12 %: a glibc arena pinned by a live chunk keeps what lies under it).
The same worker has put its weights on huge pages by then (`embedder.hugepages`), and the
bound holds with them."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from embedder.client.unixhttp import UnixHTTPConnection
from embedder.hugepages import thp_mode
from tests.integration import server as srv
from tests.polling import wait_until

pytestmark = pytest.mark.integration

MODEL = "paraphrase-minilm-l3-v2"
BOUND = 1.20  # see the module's docstring
JSON = {"Content-Type": "application/json"}


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no RSS for {pid}")


def _anon_huge_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return 0


def _long_texts(n: int, chars: int) -> list[str]:
    rng = random.Random(15)
    words = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
        "sed",
        "do",
        "eiusmod",
    ]
    return [" ".join(rng.choice(words) for _ in range(chars // 5))[:chars] for _ in range(n)]


def _steady(pid: int, bound: float = 60.0) -> float:
    """Polls the worker's RSS until four reads in a row agree within 1 MiB (generous bound)."""
    deadline = time.monotonic() + bound
    reads = [_rss_mib(pid)]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        reads.append(_rss_mib(pid))
        if max(reads[-4:]) - min(reads[-4:]) < 1.0 and len(reads) >= 4:
            return reads[-1]
    raise AssertionError(f"RSS never settled: {reads[-8:]}")


def _settled(pid: int, below: float, bound: float = 120.0) -> float:
    """Polls the worker's RSS until it is below `below` MiB (generous bound); the last value."""
    deadline = time.monotonic() + bound
    rss = _rss_mib(pid)
    while rss >= below and time.monotonic() < deadline:
        time.sleep(0.5)
        rss = _rss_mib(pid)
    return rss


def test_rss_returns_to_the_baseline_after_a_large_request(
    tmp_path: Path, built_root: Path
) -> None:
    # Admission must not shed the big request on a slow, shared machine: this is about memory.
    env = {"EMBEDDER_MODELS": MODEL, "EMBEDDER_MAX_QUEUE_WAIT": "3600"}
    server = srv.start(tmp_path, built_root, workers=1, extra_env=env)
    try:
        server.wait_ready(180)
        (pid,) = server.worker_pids()
        # Warm: every code path of a request has run, long texts included (the tokenizer's
        # thread pool, ONNX Runtime's arena); the baseline is where RSS then settles.
        for texts in (["warm up"] * 8, _long_texts(8, 8000)):
            status, _, _ = server.request(
                "rest.sock", "POST", "/v1/embeddings", {"input": texts, "model": MODEL}
            )
            assert status == 200
        baseline = _steady(pid)
        if thp_mode() in ("always", "madvise"):  # the weights went onto huge pages at load
            wait_until("the weights on huge pages", lambda: _anon_huge_kib(pid) > 0, 60)
        big = json.dumps({"input": _long_texts(256, 8000), "model": MODEL})
        conn = UnixHTTPConnection(server.sock("rest.sock"), timeout=900)  # slow when shared
        try:
            conn.request("POST", "/v1/embeddings", body=big, headers=JSON)
            response = conn.getresponse()
            assert response.status == 200 and response.read()
        finally:
            conn.close()
        after = _settled(pid, below=baseline * BOUND)
        assert after < baseline * BOUND, (baseline, after)
    finally:
        server.stop()
