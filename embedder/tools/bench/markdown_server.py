"""The live-server sections of the Markdown report: each server's load shapes, the reranker's
RAG call, lone requests, layouts compared and memory."""

from __future__ import annotations

from typing import Any

from embedder.tools.bench.markdown_cells import num, num_pair, others, pct, section, table
from embedder.tools.bench.plan import Shape


def server(s: dict[str, Any]) -> list[str]:
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
                num(row["texts_per_s"]),
                num(row.get("tokens_per_s"), 0),
                pct(row.get("vs_limit")),
                pct(row.get("vs_engine_requests")),
                num(lat.get("p50")),
                num(lat.get("p90")),
                num(lat.get("p99")),
                len(row.get("rounds", [])),
                row.get("measured"),
                f"{pct(row.get('server_cpu_share'))} ({split})",
                pct(row.get("load_cpu_share")),
                others(row.get("others_cpu_share")),
                row.get("rejected") or None,
                row.get("errors") or None,
            ]
        )
    out += table(head, rows)
    idle = [r for r in s.get("scenarios", []) if "idle_overhead_ms" in r]
    if idle:
        out += ["Idle latency (1 text, c1) vs the engine's compute on a worker's threads:", ""]
        rows = [
            [
                r["level"],
                r["transport"],
                num(r["latency_ms"]["p50"], 2),
                num(r["compute_p50_ms"], 2),
                num(r["idle_overhead_ms"], 2),
                num(r.get("idle_overhead_paired_ms"), 2),
                cpu_cell(_cpu_row(s, r)),
            ]
            for r in idle
        ]
        head = ["level", "via", "p50 ms", "compute p50 ms", "overhead ms", "paired overhead ms"]
        head += ["service CPU per lone text (ms, over the engine's)"]
        out += table(head, rows)
    return out


def rerank(r: dict[str, Any]) -> list[str]:
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
            rows.append(["engine, call by call", f"{n} docs x c1", num(c["p50_ms"], 0)])
            rows[-1] += [num(c["p99_ms"], 0), c["n"], num(eng["pairs_per_s"], 2), None]
    limit = rr.get("limit")
    if limit:
        rows.append(["limit: one plan, all runners", f"{limit['pairs']} pairs", None, None])
        rows[-1] += [limit["rounds"], num(limit["pairs_per_s"], 2), None]
    peer = (r.get("peer") or {}).get("models", {}).get(eng["model"] if eng else "", {})
    for n, c in (peer.get("calls") or {}).items():
        rows.append(["peer (torch)", f"{n} docs x c1", num(c["p50_ms"], 0), num(c["p99_ms"], 0)])
        rows[-1] += [c["n"], num(peer.get("pairs_per_s"), 2), None]
    for s in r.get("servers", []):
        for row in s.get("rerank", []):
            load = f"{row['docs']} docs x c{row['concurrency']}"
            who = f"server {s['layout']} {row['transport']}"
            if "texts_per_s" not in row:
                rows.append([who, load, row.get("error", "failed")])
                continue
            lat = row["latency_ms"]
            rows.append([who, load, num(lat["p50"], 0), num(lat["p99"], 0), row.get("measured")])
            rows[-1] += [num(row["texts_per_s"], 2), pct(row.get("vs_limit"))]
    head = ["who", "call", "p50 ms", "p99 ms", "calls", "pairs/s", "vs limit"]
    return section(
        out,
        head,
        rows,
        "_Engine and peer: pairs/s over all their calls, one call at a time; limit: the pairs "
        "of a call planned at once and pulled by a thread per runner, with nothing between "
        "calls (what the server under load is compared with); server rows: each its own shape "
        "(pairs/s of that shape). Few calls per size: p99 is the slowest call._",
    )


def lone(r: dict[str, Any]) -> list[str]:
    """The lone-request overhead per level and path (report.lone)."""
    rows = r.get("lone") or []
    if not rows:
        return []
    out = [f"## Lone requests: 1 text at c1, server {rows[0]['layout']} vs the engine", ""]
    cells = [
        [
            x["level"],
            x["path"],
            num(x["p50_ms"], 2),
            num(x["p99_ms"], 2),
            num_pair(x["compute_p50_ms"], x.get("compute_max_ms")),
            num(x["overhead_ms"], 2),
            num_pair(x["overhead_paired_ms"], x.get("overhead_paired_max_ms")),
            cpu_cell(x),
            num_pair(x.get("cpu_latency_over_ms"), x.get("cpu_engine_wall_ms")),
            num_pair(x.get("cpu_server_ms"), x.get("cpu_engine_ms")),
            threads_cell(x.get("cpu_threads_ms")),
            num(x["texts_per_s"]),
            pct(x["vs_limit"]),
            pct(x["no_overhead_vs_limit"]),
        ]
        for x in rows
    ]
    head = ["level", "path", "p50 ms", "p99 ms", "engine p50 / max ms (1 t)", "overhead ms"]
    head += ["paired overhead p50 / max ms", "service CPU per lone text (ms, over the engine's)"]
    head += ["latency over the engine, back to back / engine ms"]
    head += ["worker / engine CPU per text ms", "worker's, of which (ms)"]
    head += ["c1 texts/s", "c1 vs limit"]
    head += ["c1 vs limit, no overhead"]
    return section(
        out,
        head,
        cells,
        "_Overhead: the server's p50 minus the engine's p50 for the same texts one at a time on "
        "a single-thread session (what a runner has); paired: the median of per-text "
        "differences (and the largest). The corpus mixes 5- and 256-token texts, so p99 is "
        "the longest texts' own compute (engine max): the paired columns say what the server "
        "adds. Service CPU: the workers' CPU time per lone request minus the engine's for the "
        "same texts, median over rounds that alternate the two (min..max), rounds x texts; "
        "of which: the worker's CPU by thread (http: request threads, runners, main: "
        "gunicorn's loop, native: library threads). Back to back: in the same rounds, each "
        "text's latency minus the engine's wall time for it just before (median text, median "
        "over rounds; the engine's median beside); the paired column's engine times ran "
        "minutes before the server's, so machine drift moves it by milliseconds. No "
        "overhead: 1000 / engine p50 as a share of the limit, the most c1 could reach at "
        "batch 1 (the limit batches the whole corpus on every core)._",
    )


def _cpu_row(s: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    """The server's service CPU figure for a lone-text row, as `report.lone` names it."""
    for got in s.get("lone_cpu", []):
        if got["level"] == r["level"] and got["transport"] == r["transport"]:
            out = {f"cpu_{k}": v for k, v in got.items() if k != "rounds"}
            return out | {"cpu_rounds": len(got.get("rounds", []))}
    return {}


def cpu_cell(x: dict[str, Any]) -> str | None:
    """Median (min..max) over rounds, rounds x texts: the service CPU per lone text."""
    if not isinstance(x.get("cpu_over_ms"), int | float):
        return None
    spread = f"{x['cpu_over_min_ms']:.2f}..{x['cpu_over_max_ms']:.2f}"
    return f"{x['cpu_over_ms']:.2f} ({spread}; {x['cpu_rounds']} x {x['cpu_texts']})"


def threads_cell(threads: object) -> str | None:
    """The worker's CPU per request by thread role, the busy ones."""
    if not isinstance(threads, dict) or not threads:
        return None
    busy = {k: v for k, v in threads.items() if v >= 0.005}
    return ", ".join(f"{k} {v:.2f}" for k, v in busy.items()) or None


def layouts(r: dict[str, Any]) -> list[str]:
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
        cells = [num(got.get(n)) for n in names]
        top = max(got, key=lambda n: got[n])
        low = min(got.values())
        lead = f" (+{(got[top] / low - 1) * 100:.0f}%)" if len(got) == len(names) and low else ""
        rows.append([level, Shape(batch, conc).name, *cells, top + lead])
    out = ["## Worker layouts compared (texts/s, best transport)", ""]
    return out + table(["level", "load", *names, "faster"], rows)


def memory(r: dict[str, Any]) -> list[str]:
    rows = []
    for s in r.get("servers", []):
        for m in s.get("memory", []):
            rows.append([s["layout"], m["role"], m["pid"], num(m["rss_mib"], 0)])
            rows[-1] += [num(m["pss_mib"], 0), num(m["uss_mib"], 0)]
    if not rows:
        return []
    out = ["## Memory after the run (MiB)", ""]
    return out + table(["layout", "process", "pid", "RSS", "PSS", "USS"], rows)
