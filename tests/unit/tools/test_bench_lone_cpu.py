"""Service CPU per lone text: threads' CPU read from /proc, by role; the arithmetic of rounds;
the report's column and target. Nothing here depends on the machine's speed: a thread spins
for as long as its own clock says, and /proc must show at least that."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from embedder.catalog import STARTER
from embedder.encoder import TextEncoder
from embedder.planning import RunLimits
from embedder.sessions import SessionConfig, open_session
from embedder.threadnames import name_current, short
from embedder.tokens import load_tokenizer
from embedder.tools.bench import lone_cpu, report, schedstat
from embedder.tools.corpus import corpus
from tests.models import paraphrase_onnx, tokenizer_json

SPIN_NS = 30_000_000


def _spin(took: list[int]) -> None:
    began = time.thread_time_ns()
    while time.thread_time_ns() - began < SPIN_NS:
        pass
    took.append(time.thread_time_ns() - began)


class Named:
    """A thread that names itself natively, runs `work`, then waits (alive, so /proc still
    lists it) until released."""

    def __init__(self, name: str, work: Callable[[], None]) -> None:
        self.ready, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)

    def _run(self, work: Callable[[], None]) -> None:
        name_current()
        work()
        self.ready.set()
        self.release.wait(30)

    def __enter__(self) -> Named:
        self.thread.start()
        assert self.ready.wait(30)
        return self

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self.thread.join(30)


def test_a_threads_spin_shows_at_least_its_cpu_under_its_role() -> None:
    before = schedstat.threads([os.getpid()])
    took: list[int] = []
    with Named("http-spin", lambda: _spin(took)) as spinner:
        after = schedstat.threads([os.getpid()])
        tid = spinner.thread.native_id
        assert tid is not None
        assert after[(os.getpid(), tid)][0] == "http"
        used = schedstat.used(before, after)
    assert used["http"] >= took[0] >= SPIN_NS
    assert set(used) >= set(schedstat.ROLES)


def test_runners_keep_apart_and_a_thread_started_by_a_named_one_is_native() -> None:
    # not a served model's name: its runners may be alive in this process (other tests')
    names = ["batcher-lone-cpu-test-model-0", "batcher-lone-cpu-test-model-1"]
    assert len({short(n) for n in names}) == 2 and all(len(short(n)) <= 15 for n in names)
    alike = ["batcher-bge-base-q3-shape-0", "batcher-bge-base-q4-shape-0"]
    assert short(alike[0]) != short(alike[1]), "same head and tail, different models"
    release = threading.Event()
    child = threading.Thread(target=release.wait, args=(30,), daemon=True)
    try:
        # an unnamed thread inherits its creator's native name, as a library's own threads do
        with Named(names[0], lambda: None) as a, Named(names[1], child.start) as b:
            got = schedstat.threads([os.getpid()])
            pid = os.getpid()
            assert got[(pid, a.thread.native_id or 0)][0] == "runners"
            assert got[(pid, b.thread.native_id or 0)][0] == "runners"
            assert got[(pid, child.native_id or 0)][0] == "native"
            assert got[(pid, pid)][0] == "main"
    finally:
        release.set()
        child.join(30)
    assert schedstat.role(5, 7, "idle-trim") == "other"


def test_a_thread_that_ended_is_lost_and_a_new_one_counts_whole() -> None:
    before = {(1, 10): ("http", 500), (1, 11): ("runners", 900)}
    after = {(1, 10): ("http", 800), (1, 12): ("runners", 250)}
    used = schedstat.used(before, after)
    assert used["http"] == 300 and used["runners"] == 250 and used["other"] == 0


def test_quiet_waits_for_a_busy_process_and_gives_up_at_its_bound(tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    spin = (
        "import os, sys\nprint('spinning', flush=True)\n"
        "while not os.path.exists(sys.argv[1]): pass\nsys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", spin, str(stop)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"spinning\n"
        assert not schedstat.quiet(lambda: [child.pid], window=0.2, bound=0.5)
        stop.touch()  # now it blocks on its stdin
        assert schedstat.quiet(lambda: [child.pid], window=0.2, bound=60.0)
    finally:
        child.kill()
        child.wait()


class _Steps:
    """An encoder's steps, doing nothing (`engine_text` calls them in order)."""

    def tokenize(self, texts: list[str]) -> Any:
        return type("Tok", (), {"lengths": [len(texts)]})()

    def plan(self, lengths: list[int]) -> list[Any]:
        return [lengths]

    def run_rows(self, tok: Any, rows: Any) -> Any:
        return rows

    def finish(self, tok: Any, pooled: Any) -> None:
        return None


def test_a_round_sets_each_round_trip_against_the_engines_run_just_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[str] = []

    def target(name: str) -> lone_cpu.Target:
        t = lone_cpu.Target(name, "tcp:127.0.0.1:1", list)

        def post(body: bytes) -> int:
            sent.append(name)
            return 200

        monkeypatch.setattr(t, "post", post)
        return t

    # the clock (ms): text 0: engine 0-5, "a" 5-12, "b" 12-15; text 1 (order flipped):
    # engine 15-19, "b" 19-20, "a" 20-29
    ticks = iter(t * 1_000_000 for t in (0, 5, 5, 12, 12, 15, 15, 19, 19, 20, 20, 29))
    steps: Any = _Steps()
    got = lone_cpu.one_round(
        steps, [target("a"), target("b")], "m", ["x", "y"], 0, clock=lambda: next(ticks)
    )
    assert sent == ["a", "b", "b", "a"]
    assert got.engine_walls == [5.0, 4.0]
    assert got.over == {"a": [2.0, 5.0], "b": [-2.0, -3.0]}
    assert set(got.cpu) == {"a", "b"}


def test_rounds_subtract_the_engine_and_the_summary_keeps_the_spread() -> None:
    cpu = {"http": 4_000_000, "runners": 12_000_000, "main": 0, "native": 0, "other": 0}
    one = lone_cpu.per_round(cpu, (10_000_000, 8_000_000), 4, [0.9, 0.2, 0.5, 3.0], [2, 3, 9, 4])
    assert one["server_ms"] == pytest.approx(4.0) and one["engine_ms"] == pytest.approx(2.5)
    assert one["latency_over_ms"] == pytest.approx(0.7) and one["engine_wall_ms"] == 3.5
    assert one["over_ms"] == pytest.approx(1.5) and one["engine_run_ms"] == pytest.approx(2.0)
    assert one["threads_ms"]["http"] == pytest.approx(1.0)
    two = one | {"server_ms": 3.5, "over_ms": 1.0}
    three = one | {"server_ms": 5.0, "over_ms": 2.5}
    s = lone_cpu.summary([one, two, three], 4)
    assert s["over_ms"] == 1.5 and s["over_min_ms"] == 1.0 and s["over_max_ms"] == 2.5
    assert s["requests"] == 12 and s["threads_ms"]["runners"] == pytest.approx(3.0)
    assert s["latency_over_ms"] == pytest.approx(0.7)
    p = lone_cpu.paired(s, s | {"rounds": [two, three, two]})
    assert p == {"median_ms": -0.5, "lower": 2, "rounds": 3}


def test_the_engine_counts_its_steps_and_the_run_within() -> None:
    spec = STARTER.get("paraphrase-minilm-l3-v2")
    session = open_session(paraphrase_onnx(), SessionConfig(threads=1))
    tok = load_tokenizer(tokenizer_json(), spec.max_tokens)
    encoder = TextEncoder(spec, session, tok, RunLimits())
    for text in corpus(4, 1):
        total, run = lone_cpu.engine_text(encoder, text)
        assert total >= run > 0


def _result(cpu: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"level": "starter:2", "transport": "tcp", "batch": 1}
    row |= {"concurrency": 1, "texts_per_s": 40.0, "latency_ms": {"p50": 9.0, "p99": 41.0}}
    row |= {"per_text_ms": {"0": 5.0}}
    level: dict[str, Any] = {"key": "starter:2", "catalog": "starter"}
    level |= {"model": "all-minilm-l6-v2-int8", "precision": "int8"}
    level["engine"] = {"texts_per_s": 200.0, "single_ms_1t": {"0": 3.0}, "corpus_tokens": 1}
    srv = {"layout": "1x2", "catalog": "starter", "scenarios": [row], "lone_cpu": [cpu]}
    return {"options": {"corpus_size": 100}, "levels": [level], "servers": [srv]}


def test_the_lone_target_reads_the_cpu_figure_and_shows_the_latency() -> None:
    rounds = [{"over_ms": 0.8}, {"over_ms": 0.6}]
    cpu = {"level": "starter:2", "model": "m", "transport": "tcp", "texts": 4, "rounds": rounds}
    cpu |= {"over_ms": 0.7, "over_min_ms": 0.6, "over_max_ms": 0.8, "server_ms": 3.7}
    cpu |= {"engine_ms": 3.0, "engine_run_ms": 2.7, "threads_ms": {"http": 1.2, "main": 0.001}}
    result = _result(cpu)
    out = report.analyse(result)
    (target,) = [t for t in out["targets"] if t["key"].startswith("idle")]
    # the latency's paired overhead (5.0 - 3.0 = 2 ms) misses; the CPU figure meets it
    assert target["key"] == "idle_cpu" and target["met"] and target["value"] == 0.7
    assert target["latency_ms"] == pytest.approx(2.0)
    (lone,) = out["lone"]
    assert lone["cpu_over_ms"] == 0.7 and lone["cpu_rounds"] == 2 and lone["cpu_server_ms"] == 3.7
    md = report.markdown(result | out | _context())
    assert "0.70 (0.60..0.80; 2 x 4)" in md and "http 1.20" in md and "main 0.00" not in md
    assert "| 3.70 / 3.00 |" in md
    assert "0.70 ms CPU (latency 2.00 ms)" in md and "service CPU per lone text" in md


def test_the_lone_target_shows_the_back_to_back_latency_where_measured() -> None:
    cpu = {"level": "starter:2", "model": "m", "transport": "tcp", "texts": 4, "rounds": [{}]}
    cpu |= {"over_ms": 0.7, "over_min_ms": 0.6, "over_max_ms": 0.8, "server_ms": 3.7}
    cpu |= {"engine_ms": 3.0, "engine_run_ms": 2.7, "threads_ms": {"http": 1.2}}
    cpu |= {"latency_over_ms": 0.45, "engine_wall_ms": 2.9}
    result = _result(cpu)
    out = report.analyse(result)
    (target,) = [t for t in out["targets"] if t["key"].startswith("idle")]
    # the rounds' own latency, not the scenario's (engine timed apart: 2 ms)
    assert target["latency_ms"] == 0.45 and target["back_to_back"]
    md = report.markdown(result | out | _context())
    assert "0.70 ms CPU (latency 0.45 ms, back to back)" in md and "| 0.45 / 2.90 |" in md


def test_without_a_cpu_figure_the_lone_target_stays_the_latency() -> None:
    result = _result({"level": "starter:2", "transport": "tcp", "error": "skipped"})
    out = report.analyse(result)
    (target,) = [t for t in out["targets"] if t["key"].startswith("idle")]
    assert target["key"] == "idle" and target["value"] == pytest.approx(2.0) and not target["met"]
    assert "cpu_over_ms" not in out["lone"][0]
    assert "## Lone requests" in report.markdown(result | out | _context())


def _context() -> dict[str, Any]:
    machine = {"cpu": "CPU", "cpu_flags": [], "cores": 2, "memory_gib": 1.0}
    machine |= {"onnxruntime": "1", "tokenizers": "1", "gunicorn": "1", "python": "3"}
    options = {"corpus_size": 100, "seed": 1, "batch": 32}
    return {"mode": "test", "started": "now", "elapsed_s": 1.0, "machine": machine} | {
        "options": options
    }
