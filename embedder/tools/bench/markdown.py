"""The run as Markdown tables (what `make bench` prints and writes to latest.md)."""

from __future__ import annotations

from typing import Any

from embedder.tools.bench import markdown_limit as limit
from embedder.tools.bench import markdown_peers
from embedder.tools.bench import markdown_server as live
from embedder.tools.bench.markdown_cells import num, pct, table
from embedder.tools.bench.report_backends import section as backends

X_TARGETS = (
    *("peer_fp32", "peer_int8", "int8_fp32", "q3_peer", "q4_peer", "rerank_peer"),
    *("peer_best", "peer_fastembed"),
    *("default_ort", "bf16_fp32", "bf16_rerank", "int8_sibling", "rerank_peer_bf16"),
)


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
        value = num(t["value"], 2) if t["key"] == "idle" else pct(t["value"])
        if t["key"] == "idle_cpu":
            latency = num(t.get("latency_ms"), 2)
            how = ", back to back" if t.get("back_to_back") else ""
            value = f"{num(t['value'], 2)} ms CPU (latency {latency or '-'} ms{how})"
        if t["key"] in X_TARGETS:
            value = None if t["value"] is None else f"{t['value']:.2f}x"
        if t["key"] == "served_cosine":
            value = num(t["value"], 6)
        rows.append([t["target"], t["where"], value, verdict])
    out += table(["target", "where", "value", "result"], rows)
    met = [t for t in r.get("targets", []) if t.get("met")]
    measured = [t for t in r.get("targets", []) if t["value"] is not None]
    out += [f"{len(met)} of {len(measured)} measured targets met.", ""]
    return out


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
- **Service CPU per lone text**: the workers' CPU time per lone request (every thread's, from
  /proc) minus this process's CPU time for the engine on the same texts (a single-thread
  session), in rounds alternating the two: CPU, not wall time, so other processes' load
  hardly moves it. The lone-text target reads it, with the latency over the engine beside:
  each text's round trip minus the engine's wall time for the same text just before it.
"""


def render(r: dict[str, Any]) -> str:
    out = _header(r) + NOTES.splitlines() + [""] + limit.engine(r) + limit.peaks(r)
    out += markdown_peers.peers(r) if r.get("peers") else limit.peer(r)
    for s in r.get("servers", []):
        out += live.server(s)
    out += backends(r)
    out += live.rerank(r) + live.lone(r) + live.layouts(r) + _summary(r) + live.memory(r)
    return "\n".join(out).rstrip() + "\n"
