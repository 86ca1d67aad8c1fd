"""The run as Markdown tables (what `make bench` prints and writes to latest.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from embedder.tools.bench.plan import Shape

X_TARGETS = ("peer_fp32", "peer_int8", "int8_fp32", "q3_peer", "q4_peer", "rerank_peer")


def _table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    def cell(v: object) -> str:
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return [*lines, ""]


def _f(v: object, digits: int = 1) -> str | None:
    return None if not isinstance(v, int | float) else f"{v:.{digits}f}"


def _pct(v: object) -> str | None:
    return None if not isinstance(v, int | float) else f"{v * 100:.0f}%"


def _header(r: dict[str, Any]) -> list[str]:
    m, noise = r["machine"], r.get("noise", {})
    out = [f"# Benchmark ({r['mode']} run, {r['started']})", ""]
    out += [
        f"- machine: {m['cpu']} ({', '.join(m['cpu_flags']) or 'no AVX flags'}), "
        f"{m['cores']} cores, {m['memory_gib']} GiB; onnxruntime {m['onnxruntime']}, "
        f"tokenizers {m['tokenizers']}, gunicorn {m['gunicorn']}, Python {m['python']}",
        f"- elapsed: {r['elapsed_s']:.0f} s; corpus: {r['options']['corpus_size']} texts "
        f"(seed {r['options']['seed']}), {r['options']['batch']} texts per batched request",
    ]
    if noise:
        share = noise["other_share"]
        warn = " — **disturbed: other processes ran meanwhile**" if noise["disturbed"] else ""
        out.append(
            f"- other processes took {share * 100:.0f}% of the CPU during the run (load average "
            f"{noise['load_before'][0]:.2f} before, {noise['load_after'][0]:.2f} after){warn}"
        )
    env = r["options"].get("server_env") or []
    if env:
        out.append("- server settings: " + ", ".join(f"{k}={v}" for k, v in env))
    out += [f"- skipped: {s}" for s in r.get("skipped", [])]
    return [*out, ""]


def _engine(r: dict[str, Any]) -> list[str]:
    rows = []
    for lv in r.get("levels", []):
        e = lv["engine"]
        rows.append(
            [
                lv["key"],
                lv["model"],
                lv["precision"].upper(),
                e.get("layout") or f"1x{e.get('threads', '?')}",
                _f(e["texts_per_s"]),
                _f(e.get("tokens_per_s"), 0),
                _pct(e.get("spread")),
                _f(e.get("request_texts_per_s")),
                f"{_f(_median(e['single_ms']), 2)} / {_f(_median(e['single_ms_1t']), 2)}",
                _others(e.get("others_cpu_share")),
            ]
        )
    threads = r["machine"]["cores"]
    head = ["level", "model", "precision", "layout", "texts/s", "tokens/s", "spread"]
    head += [f"{r['options']['batch']}-text requests, texts/s", f"1 text p50 ms ({threads}t / 1t)"]
    head += ["others' CPU"]
    out = [f"## The limit: in-process engine on {threads} cores, whole corpus planned at once", ""]
    out += _table(head, rows)
    out.append(
        "_Layout: the better of one session with a thread per core (1xN) and one single-thread "
        "session per core, each in its own thread (Nx1). Request-shaped: the same engine on the "
        "texts of each batched request, in order (the padding the server must live with). "
        "Spread: (max - min) / median of the rounds._"
    )
    return [*out, ""]


def _others(share: object) -> str | None:
    """Other processes' share of the machine meanwhile; flagged when it may skew the row."""
    if not isinstance(share, int | float):
        return None
    return f"{share * 100:.0f}%" + (" (!)" if share > 0.25 else "")


def _median(d: dict[str, float]) -> float:
    values = sorted(d.values())
    n = len(values)
    return (values[n // 2] + values[(n - 1) // 2]) / 2 if n else 0.0


def _peaks(r: dict[str, Any]) -> list[str]:
    """The machine's GEMM peaks and each level's share of the matching one, with its profile."""
    p = r.get("peaks")
    if not p:
        return []
    out = ["## The machine's peaks (ORT GEMM) and each level's share", ""]
    rows = [
        [row["kind"], row["threads"], "x".join(map(str, row["shape"])), _f(row["gops"])]
        for row in p["shapes"]
    ]
    out += _table(["GEMM", "threads", "M x K x N", "G(FL)OP/s"], rows)
    rows = []
    for lv in r.get("levels", []):
        pk, prof = lv.get("peak"), lv.get("profile") or []
        if not pk:
            continue
        top = ", ".join(f"{op} {share * 100:.0f}%" for op, share in prof[:6])
        rows.append(
            [
                lv["key"],
                lv["precision"].upper(),
                _f(lv["engine"]["texts_per_s"]),
                _f(pk["achieved_gops"]),
                f"{pk['peak_kind']} {_f(pk['peak_gops'])}",
                _pct(pk["share"]),
                top,
            ]
        )
    head = ["level", "precision", "texts/s", "model G(FL)OP/s", "peak", "share", "top ops (1 t)"]
    out += _table(head, rows)
    out.append(
        "Model work counts the weight GEMMs only (2 x K x N per token); the profile is one "
        "16 x 48-token batch on one thread."
    )
    return [*out, ""]


def _torch_peer(r: dict[str, Any]) -> list[str]:
    """The peer on the shapes stand-ins (same weights), with the check that made it count."""
    models = (r.get("peer") or {}).get("models", {})
    out = ["## The peer: Hugging Face transformers on PyTorch CPU, the SAME seeded weights", ""]
    engines = {lv["model"]: lv["engine"] for lv in r.get("levels", [])}
    rows = []
    for model, p in models.items():
        check = p.get("check") or {}
        agree = f"min cos {_f(check.get('min_cosine'), 7)}" if "min_cosine" in check else ""
        agree += f" max abs diff {check.get('max_abs_diff', 0):.1e}" if check else ""
        if "skipped" in p:
            rows.append([model, None, agree, f"not measured: {p['skipped'][:200]}"])
            continue
        if "pairs_per_s" in p:
            calls = ", ".join(
                f"{n} docs {_f(c['p50_ms'], 0)} ms (n={c['n']})" for n, c in p["calls"].items()
            )
            rows.append(
                [model, p.get("peer"), agree, f"{_f(p['pairs_per_s'], 2)} pairs/s; {calls}"]
            )
            continue
        ours = engines.get(model, {}).get("texts_per_s")
        mine = (
            f" (engine phase: ours {_f(ours, 2)}, {ours / p['texts_per_s']:.2f}x)" if ours else ""
        )
        for m, got in (p.get("interleaved") or {}).items():
            mine += f"; alternate rounds: {m} {_f(got['texts_per_s'], 2)}, {got['ratio']:.2f}x"
        rows.append(
            [
                model,
                p.get("peer"),
                agree,
                f"{_f(p['texts_per_s'], 2)} texts/s{mine}; 1 text p50 "
                f"{_f(p.get('single_ms_p50'), 1)} ms; max tokens {p.get('max_tokens')}",
            ]
        )
    if not models:
        return [*out, f"Not measured: {(r.get('peer') or {}).get('skipped', 'no FP32 level')}", ""]
    first = next(iter(models.values()))
    out += _table(["our FP32 level", "peer", "same function? (checked first)", "measured"], rows)
    out.append(
        f"_torch {first.get('torch')}, transformers {first.get('transformers')}, "
        f"{first.get('threads')} threads, in its own process, after the check; the stand-in's "
        "ONNX initializers loaded into the HF module. Embeddings: sorted by length, batches of "
        "32 padded to their longest, CLS + L2 (what sentence-transformers does for BGE); pairs: "
        "the same sorting and batching (what its CrossEncoder does)._"
    )
    return [*out, ""]


def _rerank(r: dict[str, Any]) -> list[str]:
    """The reranker's RAG call: engine, peer and the server at idle and under load."""
    rr = r.get("rerank")
    if not rr:
        return []
    out = [
        f"## Reranker: the RAG call (1 query + N docs of ~{rr['doc_tokens']} tokens)",
        "",
        f"Query: {rr['query']!r}.",
        "",
    ]
    rows = []
    eng = rr.get("engine")
    if eng:
        for n, c in eng["calls"].items():
            rows.append(["engine (limit)", f"{n} docs x c1", _f(c["p50_ms"], 0)])
            rows[-1] += [_f(c["p99_ms"], 0), c["n"], _f(eng["pairs_per_s"], 2), None]
    peer = (r.get("peer") or {}).get("models", {}).get(eng["model"] if eng else "", {})
    for n, c in (peer.get("calls") or {}).items():
        rows.append(["peer (torch)", f"{n} docs x c1", _f(c["p50_ms"], 0), _f(c["p99_ms"], 0)])
        rows[-1] += [c["n"], _f(peer.get("pairs_per_s"), 2), None]
    for s in r.get("servers", []):
        for row in s.get("rerank", []):
            load = f"{row['docs']} docs x c{row['concurrency']}"
            who = f"server {s['layout']} {row['transport']}"
            if "texts_per_s" not in row:
                rows.append([who, load, row.get("error", "failed")])
                continue
            lat = row["latency_ms"]
            rows.append([who, load, _f(lat["p50"], 0), _f(lat["p99"], 0), row.get("measured")])
            rows[-1] += [_f(row["texts_per_s"], 2), _pct(row.get("vs_limit"))]
    head = ["who", "call", "p50 ms", "p99 ms", "calls", "pairs/s", "vs limit"]
    out += _table(head, rows)
    out.append(
        "_Engine and peer: pairs/s over all their calls; server rows: each its own shape "
        "(pairs/s of that shape). Few calls per size: p99 is the slowest call._"
    )
    return [*out, ""]


def _peer(r: dict[str, Any]) -> list[str]:
    p = r.get("peer") or {}
    if "models" in p:
        return _torch_peer(r)
    out = ["## The peer: sentence-transformers (PyTorch CPU, all-MiniLM-L6-v2)", ""]
    if "skipped" in p:
        return [*out, f"Not measured: {p['skipped']}", ""]
    head = ["torch", "sentence-transformers", "threads", "texts/s", "tokens/s", "spread"]
    row = [p.get("torch"), p.get("sentence_transformers"), p.get("threads")]
    row += [_f(p.get("texts_per_s")), _f(p.get("tokens_per_s"), 0), _pct(p.get("spread"))]
    out += _table([*head, "1 text p50 ms"], [[*row, _f(p.get("single_ms_p50"), 2)]])
    return out


def _server(s: dict[str, Any]) -> list[str]:
    mark = " — the default here" if s.get("default") else ""
    title = f"## Live server: gunicorn {s['layout']} (workers x cores each){mark}, {s['catalog']}"
    out = [title, ""]
    if "ready_s" in s:
        out += [f"Ready in {s['ready_s']:.1f} s.", ""]
    if "error" in s:
        out += [f"**{s['error']}**", ""]
    head = ["level", "load", "via", "texts/s", "tokens/s", "vs limit", "vs engine on requests"]
    head += ["p50 ms", "p90 ms", "p99 ms", "rounds", "answers", "server CPU (split)"]
    head += ["loadgen CPU", "others' CPU", "503s", "errors"]
    rows = []
    for row in s.get("scenarios", []):
        load = Shape(row["batch"], row["concurrency"]).name
        if "texts_per_s" not in row:
            rows.append([row["level"], load, row["transport"], row.get("error", "failed")])
            continue
        lat = row.get("latency_ms", {})
        split = "/".join(f"{w * 100:.0f}" for w in row.get("worker_cpu_split", []))
        rows.append(
            [
                row["level"],
                load,
                row["transport"],
                _f(row["texts_per_s"]),
                _f(row.get("tokens_per_s"), 0),
                _pct(row.get("vs_limit")),
                _pct(row.get("vs_engine_requests")),
                _f(lat.get("p50")),
                _f(lat.get("p90")),
                _f(lat.get("p99")),
                len(row.get("rounds", [])),
                row.get("measured"),
                f"{_pct(row.get('server_cpu_share'))} ({split})",
                _pct(row.get("load_cpu_share")),
                _others(row.get("others_cpu_share")),
                row.get("rejected") or None,
                row.get("errors") or None,
            ]
        )
    out += _table(head, rows)
    idle = [r for r in s.get("scenarios", []) if "idle_overhead_ms" in r]
    if idle:
        out += ["Idle latency (1 text, c1) vs the engine's compute on a worker's threads:", ""]
        rows = [
            [
                r["level"],
                r["transport"],
                _f(r["latency_ms"]["p50"], 2),
                _f(r["compute_p50_ms"], 2),
                _f(r["idle_overhead_ms"], 2),
                _f(r.get("idle_overhead_paired_ms"), 2),
            ]
            for r in idle
        ]
        head = ["level", "via", "p50 ms", "compute p50 ms", "overhead ms", "paired overhead ms"]
        out += _table(head, rows)
    return out


def _lone(r: dict[str, Any]) -> list[str]:
    """The lone-request overhead per level and path (report.lone)."""
    rows = r.get("lone") or []
    if not rows:
        return []
    out = [f"## Lone requests: 1 text at c1, server {rows[0]['layout']} vs the engine", ""]
    table = [
        [
            x["level"],
            x["path"],
            _f(x["p50_ms"], 2),
            _f(x["p99_ms"], 2),
            f"{_f(x['compute_p50_ms'], 2)} / {_f(x.get('compute_max_ms'), 2)}",
            _f(x["overhead_ms"], 2),
            f"{_f(x['overhead_paired_ms'], 2)} / {_f(x.get('overhead_paired_max_ms'), 2)}",
            _f(x["texts_per_s"]),
            _pct(x["vs_limit"]),
            _pct(x["no_overhead_vs_limit"]),
        ]
        for x in rows
    ]
    head = ["level", "path", "p50 ms", "p99 ms", "engine p50 / max ms (1 t)", "overhead ms"]
    head += ["paired overhead p50 / max ms", "c1 texts/s", "c1 vs limit"]
    head += ["c1 vs limit, no overhead"]
    out += _table(head, table)
    out.append(
        "_Overhead: the server's p50 minus the engine's p50 for the same texts one at a time on "
        "a single-thread session (what a runner has); paired: the median of per-text "
        "differences (and the largest). The corpus mixes 5- and 256-token texts, so p99 is "
        "the longest texts' own compute (engine max): the paired columns say what the server "
        "adds. No overhead: 1000 / engine p50 as a share of the limit, the most c1 "
        "could reach on one core (the limit batches the whole corpus on every core)._"
    )
    return [*out, ""]


def _layouts(r: dict[str, Any]) -> list[str]:
    """Each load shape on each layout side by side (best transport), to choose the default."""
    best: dict[tuple[str, int, int], dict[str, float]] = {}
    names: list[str] = []
    for s in r.get("servers", []):
        names += [s["layout"]] if s["layout"] not in names else []
        for row in s.get("scenarios", []):
            if "texts_per_s" in row:
                key = (row["level"], row["batch"], row["concurrency"])
                got = best.setdefault(key, {})
                got[s["layout"]] = max(got.get(s["layout"], 0.0), row["texts_per_s"])
    if len(names) < 2 or not best:
        return []
    rows = []
    for (level, batch, conc), got in best.items():
        cells = [_f(got.get(n)) for n in names]
        top = max(got, key=lambda n: got[n])
        low = min(got.values())
        lead = f" (+{(got[top] / low - 1) * 100:.0f}%)" if len(got) == len(names) and low else ""
        rows.append([level, Shape(batch, conc).name, *cells, top + lead])
    out = ["## Worker layouts compared (texts/s, best transport)", ""]
    return out + _table(["level", "load", *names, "faster"], rows)


def _summary(r: dict[str, Any]) -> list[str]:
    out = ["## Ratios", ""]
    ratios = r.get("ratios", {})
    out += [f"- {name}: {value:.2f}x" for name, value in ratios.items()]
    if not ratios:
        out.append("- none: they need the peer and both all-MiniLM-L6-v2 levels (FP32, INT8)")
    out += ["", "## Targets (reported, not asserted; servers: the default layout)", ""]
    rows = []
    for t in r.get("targets", []):
        if t["value"] is None:
            verdict = "not measured"
        else:
            verdict = "met" if t["met"] else f"gap: {t['gap']}"
        value = _f(t["value"], 2) if t["key"] == "idle" else _pct(t["value"])
        if t["key"] in X_TARGETS:
            value = None if t["value"] is None else f"{t['value']:.2f}x"
        rows.append([t["target"], t["where"], value, verdict])
    out += _table(["target", "where", "value", "result"], rows)
    met = [t for t in r.get("targets", []) if t.get("met")]
    measured = [t for t in r.get("targets", []) if t["value"] is not None]
    out += [f"{len(met)} of {len(measured)} measured targets met.", ""]
    return out


def _memory(r: dict[str, Any]) -> list[str]:
    rows = []
    for s in r.get("servers", []):
        for m in s.get("memory", []):
            rows.append([s["layout"], m["role"], m["pid"], _f(m["rss_mib"], 0)])
            rows[-1] += [_f(m["pss_mib"], 0), _f(m["uss_mib"], 0)]
    if not rows:
        return []
    out = ["## Memory after the run (MiB)", ""]
    return out + _table(["layout", "process", "pid", "RSS", "PSS", "USS"], rows)


NOTES = """## How to read this

- **The limit**: the engine in this process, no HTTP: `TextEncoder.embed` on the whole corpus at
  once (sorted by length, sub-batches planned by cost), on all cores (the better of one session
  with a thread per core and a single-thread session per core). Median of the rounds, after a
  warm-up. *Request-shaped*: the same engine on the texts of each batched request in order.
- **Live server**: a real gunicorn on a temporary socket root and a free loopback port, loaded
  by a separate process with keep-alive connections. Batched shapes: after one 1-text request
  per connection, each round is a wave of `c` requests sent at once (texts/s = texts / wave
  time). Single-text shapes: a closed loop; rounds are equal time windows after a warm-up,
  each request counted over its lifetime. Latencies are per request, as the client saw them.
- **vs limit**: server texts/s / the limit's texts/s for the same level. **server CPU**: the
  workers' CPU over the run's wall time and cores, with each worker's share of it.
  **others' CPU**: what processes other than the benchmark took meanwhile; (!) above 25%.
- **Idle latency**: 1 text at concurrency 1 (p50) vs the engine's own time for the same texts
  one at a time, on the threads a worker has; *paired* is the median of per-text differences.
"""


def render(r: dict[str, Any]) -> str:
    out = _header(r) + NOTES.splitlines() + [""] + _engine(r) + _peaks(r) + _peer(r)
    for s in r.get("servers", []):
        out += _server(s)
    out += _rerank(r) + _lone(r) + _layouts(r) + _summary(r) + _memory(r)
    return "\n".join(out).rstrip() + "\n"
