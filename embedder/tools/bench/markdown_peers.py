"""The starter peers' section of the Markdown report: our levels of all-MiniLM-L6-v2 and the
peers on the same texts and cores, with the ratios of alternate rounds."""

from __future__ import annotations

from typing import Any

from embedder.tools.bench.markdown_cells import num, others, pct, section


def cpu_line(p: dict[str, Any]) -> str:
    units = p.get("bf16_units") or []
    if units:
        bf16 = f"BF16 units: {', '.join(units)} (torch's bf16 runs on them)"
    else:
        bf16 = (
            "**no BF16 units** (no avx512_bf16 / amx_bf16): torch emulates bf16 here, slower "
            "than FP32, so sentence-transformers' best mode on this CPU is FP32 and its bf16 "
            "gets one round"
        )
    flags = ", ".join(p.get("cpu_flags") or []) or "no AVX flags"
    return f"CPU: {p.get('cpu')} ({flags}), {p.get('threads')} threads for everyone; {bf16}."


def _cosine(row: dict[str, Any]) -> str | None:
    if "min_cosine" not in row:
        return None
    return f"{row['min_cosine']:.6f} / {row['mean_cosine']:.6f}"


def _versions(rows: dict[str, dict[str, Any]]) -> str:
    seen: dict[str, str] = {}
    for row in rows.values():
        for key in ("torch", "sentence_transformers", "fastembed", "onnxruntime"):
            if key in row:
                seen.setdefault(key.replace("_", "-"), str(row[key]))
    return ", ".join(f"{k} {v}" for k, v in seen.items())


def peers(r: dict[str, Any]) -> list[str]:
    p = r["peers"]
    rows = p.get("contenders", {})
    ours = [k for k, row in rows.items() if row.get("kind") == "ours"]
    out = ["## The peers: all-MiniLM-L6-v2, same texts and cores, alternate rounds", ""]
    out += [cpu_line(p), ""]
    head = ["contender", "what", "texts/s", "rounds", "spread", "1 text p50 ms"]
    head += [f"min / mean cos vs {p.get('reference')}"]
    # A level served on another runtime: what it computes in (BF16), not its level's name.
    head += [f"{k} ({rows[k].get('computes', rows[k]['precision']).upper()}) / it" for k in ours]
    table = []
    for key, row in rows.items():
        if "skipped" in row:
            why = f"{row.get('what')} — **not measured**: {row['skipped'][:300]}"
            table.append([key, why, *[None] * (len(head) - 2)])
            continue
        paired = [p.get("paired", {}).get(k, {}).get(key) for k in ours]
        what = row.get("what", "")
        what += " (emulated bf16)" if row.get("emulated") else ""
        what += f" on {row['sample']} of the texts (every n-th)" if row.get("sample") else ""
        what += f" — stopped: {row['failed_later'][:120]}" if "failed_later" in row else ""
        table.append(
            [
                key,
                what,
                num(row.get("texts_per_s")),
                len(row.get("rounds", {})),
                pct(row.get("spread")),
                num(row.get("single_ms_p50"), 1),
                _cosine(row),
                *[None if v is None else f"{v:.2f}x" for v in paired],
            ]
        )
    note = (
        f"_{p.get('texts')} texts, {p.get('threads')} threads each ({_versions(rows)}); others' "
        f"CPU meanwhile {others(p.get('others_cpu_share'))}. Each round gives every contender "
        "the whole corpus once, one after the other; texts/s is the median of its rounds, the "
        "ratio columns the median of per-round ratios (neighbouring rounds, same load). Ours: "
        "one planned set over a runner thread per core; sentence-transformers: `encode` "
        f"(sorted by length, batches of {p.get('batch')}); fastembed: `embed` in the texts' order, "
        f"batches of {p.get('batch')} (its default is 256). Cosines: the first round's vectors._"
    )
    return section(out, head, table, note)
