"""The live-server phase of a run: every (catalog, layout) server started at once, then each
loaded with every shape, level by level, within the time budget."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

from embedder.catalog import BGE, SHAPES, STARTER, Catalog
from embedder.encoder import TextEncoder
from embedder.settings import Settings
from embedder.tools.bench import lone_cpu, schedstat, server
from embedder.tools.bench.engine import lone_engine
from embedder.tools.bench.machine import cores
from embedder.tools.bench.plan import Options, Shape, served_settings
from embedder.tools.bench.run_levels import Level
from embedder.tools.bench.scenarios import Clock, Scheduler, brief, run_load

Started = list[tuple[Catalog, server.Server, dict[str, Any]]]


def start_servers(
    opts: Options, clock: Clock, levels: list[Level], tmp: Path, started: Started
) -> None:
    """Every (catalog, layout) server at once, into `started` (so the caller can stop each one
    whatever happens); returns once all are ready (or failed)."""
    for catalog in (STARTER, BGE, SHAPES):
        ids = [lv.spec.id for lv in levels if lv.catalog is catalog]
        for workers, threads in opts.layouts if ids else ():
            name = f"{workers}x{threads}"
            clock.say(f"starting gunicorn {name} ({catalog.name}: {', '.join(ids)})")
            srv = server.start(
                tmp / f"{catalog.name}-{name}",
                catalog=catalog.name,
                models_root=opts.models_root,
                models=ids,
                workers=workers,
                threads=threads,
                extra_env=dict(opts.server_env),
            )
            started.append((catalog, srv, {"layout": name, "catalog": catalog.name}))
    began = time.monotonic()
    for _, srv, info in started:
        try:
            srv.wait_ready(timeout=max(30.0, 240.0 - (time.monotonic() - began)))
            info["ready_s"] = time.monotonic() - began
            info["scenarios"] = []
        except (RuntimeError, TimeoutError, OSError) as exc:
            info["error"] = str(exc)
    for _, srv, info in started:  # what a worker does once it answers (the weights onto
        if "error" not in info:  # huge pages) ends before anything is measured
            info["quiet_after_load"] = schedstat.quiet(srv.worker_pids, bound=60.0)
            if not info["quiet_after_load"]:
                clock.say(f"gunicorn {info['layout']}: workers still busy after load")


def load_weight(
    opts: Options, levels: list[Level], rerankers: list[Level], started: Started
) -> float:
    """How much of the time budget each server's load shapes ask for, all told."""
    lone = opts.lone_cpu_timing.weight * len(levels) * len(opts.lone_cpu_transports())
    lone = lone if cpu_server(started) else 0.0
    return (
        lone
        + sum(
            opts.timing(shape).weight
            for lv in levels
            for cat, _, info in started
            if cat is lv.catalog and "error" not in info
            for shape, _ in opts.runs(lv.spec.level or 0)
        )
        + sum(
            opts.rerank_timing.weight * len(rerank_shapes(opts))
            for lv in rerankers
            for cat, _, info in started
            if cat is lv.catalog and "error" not in info
        )
    )


def load_servers(
    opts: Options,
    sched: Scheduler,
    levels: list[Level],
    rerankers: list[Level],
    files: dict[str, Path],
    query: str,
    started: Started,
) -> None:
    """Every load shape on each ready server, level by level, then the reranker; then memory."""
    measured = cpu_server(started)
    for lv in levels:
        for cat, srv, info in started:
            if cat is lv.catalog and "error" not in info:
                info["scenarios"] += load_level(opts, sched, srv, info, lv, files)
                if any(srv is m for m in measured):
                    info.setdefault("lone_cpu", []).extend(
                        load_lone_cpu(opts, sched, srv, info, lv, files)
                    )
    for lv in rerankers:
        for cat, srv, info in started:
            if cat is lv.catalog and "error" not in info:
                info["rerank"] = load_rerank(opts, sched, srv, info, lv, files, query)
    for _, srv, info in started:
        if "error" not in info:
            info["memory"] = srv.memory()


def rerank_shapes(opts: Options) -> list[Shape]:
    """The RAG calls at idle (c1, one size each) and the load shape (pairs/s)."""
    return [Shape(n, 1) for n, _ in opts.rerank_calls] + [Shape(*opts.rerank_load)]


def load_rerank(
    opts: Options,
    sched: Scheduler,
    srv: server.Server,
    info: dict[str, Any],
    lv: Level,
    files: dict[str, Path],
    query: str,
) -> list[dict[str, Any]]:
    """RAG calls (1 query + n docs) through REST /v1/rerank: waves of c calls; the calls'
    p50/p99 and pairs/s (`texts_per_s` counts documents)."""
    rows: list[dict[str, Any]] = []
    for shape in rerank_shapes(opts):
        row: dict[str, Any] = {"model": lv.spec.id, "docs": shape.batch}
        row |= {"concurrency": shape.concurrency, "transport": opts.transports[0]}
        seconds = sched.slot(opts.rerank_timing)
        if seconds is None:
            row["error"] = "skipped: out of time budget"
        else:
            row |= run_load(
                opts,
                srv,
                opts.transports[0],
                lv.spec.id,
                shape,
                files["docs"],
                seconds,
                query=query,
            )
        rows.append(row)
        what = f"rerank {shape.batch} docs x c{shape.concurrency}"
        sched.clock.say(f"{info['layout']} {lv.spec.id} {what}: {brief(row)}")
    return rows


def load_level(
    opts: Options,
    sched: Scheduler,
    srv: server.Server,
    info: dict[str, Any],
    lv: Level,
    files: dict[str, Path],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for shape, transport in opts.runs(lv.spec.level or 0):
        row: dict[str, Any] = {"level": lv.key, "model": lv.spec.id, "transport": transport}
        row |= {"batch": shape.batch, "concurrency": shape.concurrency}
        seconds = sched.slot(opts.timing(shape))
        if seconds is None:
            row["error"] = "skipped: out of time budget"
        else:
            idle = shape.batch == 1 and shape.concurrency == 1
            texts = files["idle" if idle else "corpus"]
            row |= run_load(opts, srv, transport, lv.spec.id, shape, texts, seconds)
        rows.append(row)
        sched.clock.say(f"{info['layout']} {lv.spec.id} {transport} {shape.name}: {brief(row)}")
    return rows


def cpu_server(started: Started) -> list[server.Server]:
    """The servers the service CPU per lone text is measured on: of each catalog, the one with
    the layout the service would pick here (else the first)."""
    workers, threads = Settings().sizing(cores())
    ready = [(cat, srv, info) for cat, srv, info in started if "error" not in info]
    out: list[server.Server] = []
    for catalog in (STARTER, BGE, SHAPES):
        mine = [x for x in ready if x[0] is catalog]
        chosen = [x for x in mine if x[2]["layout"] == f"{workers}x{threads}"] or mine
        out += [chosen[0][1]] if chosen else []
    return out


def load_lone_cpu(
    opts: Options,
    sched: Scheduler,
    srv: server.Server,
    info: dict[str, Any],
    lv: Level,
    files: dict[str, Path],
) -> list[dict[str, Any]]:
    """The worker's CPU per lone text over the engine's (lone_cpu), REST on each of the
    plan's lone-figure transports in turn, in rounds alternating with the engine in this
    process (one engine session for them all)."""
    rows: list[dict[str, Any]] = []
    encoder: TextEncoder | None = None
    t = opts.lone_cpu_timing
    texts = json.loads(files["idle"].read_text(encoding="utf-8"))
    for transport in opts.lone_cpu_transports():
        row: dict[str, Any] = {"level": lv.key, "model": lv.spec.id, "transport": transport}
        seconds = sched.slot(t)
        if seconds is None:
            row["error"] = "skipped: out of time budget"
        else:
            address = srv.tcp if transport == "tcp" else srv.unix
            target = lone_cpu.Target(info["layout"], address, srv.worker_pids)
            until = time.monotonic() + seconds
            try:
                if encoder is None:  # the worker's runners: its layout's cores
                    runners = int(info["layout"].partition("x")[2])
                    encoder = lone_engine(lv.store, lv.spec, served_settings(opts), runners)
                got = lone_cpu.measure(
                    encoder, [target], lv.spec.id, texts, rounds=t.rounds, until=until
                )
                row |= got[target.name]
            except (OSError, ValueError, RuntimeError, http.client.HTTPException) as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                target.close()
        said = row.get("error") or (
            f"{row['over_ms']:.2f} ms over the engine's "
            f"({row['over_min_ms']:.2f}..{row['over_max_ms']:.2f}), worker "
            f"{row['server_ms']:.2f} ms, latency {row['latency_over_ms']:.2f} ms over, "
            f"{len(row['rounds'])} rounds x {row['texts']} texts"
        )
        where = f"{info['layout']} {lv.spec.id} {transport}"
        sched.clock.say(f"{where} service CPU per lone text: {said}")
        rows.append(row)
    return rows
