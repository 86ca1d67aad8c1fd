"""The in-process sections of the Markdown report: the limit (the engine), the machine's
peaks and the peer."""

from __future__ import annotations

from typing import Any

from embedder.tools.bench.markdown_cells import median_of, num, others, pct, section, table


def engine(r: dict[str, Any]) -> list[str]:
    rows = []
    for lv in r.get("levels", []):
        e = lv["engine"]
        rows.append(
            [
                lv["key"],
                lv["model"],
                lv["precision"].upper(),
                e.get("runtime", "onnxruntime"),
                e.get("layout") or f"1x{e.get('threads', '?')}",
                num(e["texts_per_s"]),
                num(e.get("tokens_per_s"), 0),
                pct(e.get("spread")),
                num(e.get("request_texts_per_s")),
                # the shapes bench samples one thread only: "-" for what it did not time
                " / ".join(
                    (num(median_of(e[k]), 2) if e.get(k) else None) or "-"
                    for k in ("single_ms", "single_ms_1t")
                ),
                others(e.get("others_cpu_share")),
            ]
        )
    threads = r["machine"]["cores"]
    head = ["level", "model", "precision", "computes on", "layout", "texts/s", "tokens/s"]
    head += ["spread"]
    head += [f"{r['options']['batch']}-text requests, texts/s", f"1 text p50 ms ({threads}t / 1t)"]
    head += ["others' CPU"]
    out = [f"## The limit: in-process engine on {threads} cores, whole corpus planned at once", ""]
    return section(
        out,
        head,
        rows,
        "_Layout: the better of one session with a thread per core (1xN) and one single-thread "
        "session per core, each in its own thread pulling the next sub-batch of one plan "
        "(Nx1), as a worker's runners do. Request-shaped: the same engine on the "
        "texts of each batched request, in order (the padding the server must live with). "
        "Spread: (max - min) / median of the rounds. Computes on: the runtime the servers "
        "compute the level on (`EMBEDDER_BACKEND` as they read it; on OpenVINO one compiled "
        "model shared by a runner per core, as a worker has it)._",
    )


def peaks(r: dict[str, Any]) -> list[str]:
    """The machine's GEMM peaks and each level's share of the matching one, with its profile."""
    p = r.get("peaks")
    if not p:
        return []
    out = ["## The machine's peaks (ORT GEMM) and each level's share", ""]
    rows = [
        [
            row["kind"],
            f"{row['threads']} ({row['mode']})" if "mode" in row else row["threads"],
            "x".join(map(str, row["shape"])),
            num(row["gops"]),
        ]
        for row in p["shapes"]
    ]
    out += table(["GEMM", "threads", "M x K x N", "G(FL)OP/s"], rows)
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
                num(lv["engine"]["texts_per_s"]),
                num(pk["achieved_gops"]),
                f"{pk['peak_kind']} {num(pk['peak_gops'])}",
                pct(pk["share"]),
                top,
            ]
        )
    head = ["level", "precision", "texts/s", "model G(FL)OP/s", "peak", "share", "top ops (1 t)"]
    lines = section(
        out,
        head,
        rows,
        "Model work counts the weight GEMMs only (2 x K x N per token); the profile is one "
        "16 x 48-token batch on one thread. The all-core peak is the better of one session "
        "with a thread per core and a single-thread session per core at once (Nx1).",
    )
    return lines + _recipe_forms(r)


def _recipe_forms(r: dict[str, Any]) -> list[str]:
    """One line per INT8 level: its file as built against the other INT8 forms."""
    from embedder.tools.bench.graphs.nbits import BLOCK

    def ratio(shape: dict[str, Any], form: str) -> str:
        return f"{shape[form]:.3f}x" if form in shape else "-"

    out = []
    for lv in r.get("levels", []):
        forms = lv.get("recipe_forms")
        if not forms:
            continue
        each = "; ".join(
            f"{s['batch']} x {s['tokens']} tokens {ratio(s, 'opset17')} / {ratio(s, 'nbits8')} "
            f"/ {ratio(s, 'mha')} ({s['rounds']} rounds)"
            for s in forms["shapes"]
        )
        out.append(f"- {lv['key']} ({lv['model']}): {each}")
    if not out:
        return []
    head = (
        "INT8 as built against other INT8 forms of the same FP32 graph, one thread, rounds "
        "in rotating order: the recipe's opset-17 form (a Reciprocal and a Mul per row scale, "
        f"a shift Add before GELU outputs; - where the file is that form) / MatMulNBits with "
        f"8-bit weight blocks of {BLOCK} (activations quantized inside the kernel; "
        "`graphs.nbits`) / the file's graph with its attention cores fused into "
        "MultiHeadAttention (`graphs.attention`; - where nothing fused). Above 1x "
        "the file as built is faster:"
    )
    return [head, "", *out, ""]


def _torch_peer(r: dict[str, Any]) -> list[str]:
    """The peer on the shapes stand-ins (same weights), with the check that made it count."""
    models = (r.get("peer") or {}).get("models", {})
    out = ["## The peer: Hugging Face transformers on PyTorch CPU, the SAME seeded weights", ""]
    engines = {lv["model"]: lv["engine"] for lv in r.get("levels", [])}
    rows = []
    for model, p in models.items():
        check = p.get("check") or {}
        agree = f"min cos {num(check.get('min_cosine'), 7)}" if "min_cosine" in check else ""
        agree += f" max abs diff {check.get('max_abs_diff', 0):.1e}" if check else ""
        if "skipped" in p:
            rows.append([model, None, agree, f"not measured: {p['skipped'][:200]}"])
            continue
        if "pairs_per_s" in p:
            calls = ", ".join(
                f"{n} docs {num(c['p50_ms'], 0)} ms (n={c['n']})" for n, c in p["calls"].items()
            )
            rows.append(
                [
                    model,
                    p.get("peer"),
                    agree,
                    f"{num(p['pairs_per_s'], 2)} pairs/s; {calls}{_bf16_pairs(p.get('bf16'))}",
                ]
            )
            continue
        ours = engines.get(model, {}).get("texts_per_s")
        mine = (
            f" (engine phase: ours {num(ours, 2)}, {ours / p['texts_per_s']:.2f}x)" if ours else ""
        )
        for m, got in (p.get("interleaved") or {}).items():
            mine += f"; alternate rounds: {m} {num(got['texts_per_s'], 2)}, {got['ratio']:.2f}x"
        rows.append(
            [
                model,
                p.get("peer"),
                agree,
                f"{num(p['texts_per_s'], 2)} texts/s{mine}; 1 text p50 "
                f"{num(p.get('single_ms_p50'), 1)} ms; max tokens {p.get('max_tokens')}"
                f"{_bf16_texts(p.get('bf16'))}",
            ]
        )
    if not models:
        return [*out, f"Not measured: {(r.get('peer') or {}).get('skipped', 'no FP32 level')}", ""]
    first = next(iter(models.values()))
    head = ["our FP32 level", "peer", "same function? (checked first)", "measured"]
    return section(
        out,
        head,
        rows,
        f"_torch {first.get('torch')}, transformers {first.get('transformers')}, "
        f"{first.get('threads')} threads, in its own process, after the check; the stand-in's "
        "ONNX initializers loaded into the HF module. Embeddings: sorted by length, batches of "
        "32 padded to their longest, CLS + L2 (what sentence-transformers does for BGE); pairs: "
        "the same sorting and batching (what its CrossEncoder does). bf16: the same module "
        f"cast to bfloat16, timed between FP32's rounds or calls. {_bf16_units(r)}_",
    )


def _bf16_units(r: dict[str, Any]) -> str:
    units = r.get("machine", {}).get("bf16_units")
    if units is None:
        return ""
    if units:
        return f"This CPU has BF16 units ({', '.join(units)})."
    return (
        "This CPU has no BF16 units: torch emulates bf16, slower than FP32 (not the peer's "
        "best mode here), so bf16 runs one round or call."
    )


def _bf16_texts(b: dict[str, Any] | None) -> str:
    if not b:
        return ""
    each = "; ".join(f"{m} {v['ratio']:.2f}x" for m, v in b.get("interleaved", {}).items())
    runs = f"{len(b.get('rounds', []))} round{'s' if len(b.get('rounds', [])) != 1 else ''}"
    return (
        f". **bf16**: {num(b.get('texts_per_s'), 2)} texts/s ({runs}"
        f"{', emulated' if b.get('emulated') else ''}), min cos vs FP32 "
        f"{num(b.get('min_cosine'), 5)}{'; alternate rounds: ' + each if each else ''}"
    )


def _bf16_pairs(b: dict[str, Any] | None) -> str:
    if not b or not b.get("calls"):
        return ""
    calls = ", ".join(
        f"{n} docs {num(c['p50_ms'], 0)} ms (n={c['n']})" for n, c in b["calls"].items()
    )
    return (
        f". **bf16**: {num(b.get('pairs_per_s'), 2)} pairs/s; {calls}"
        f"{' (emulated)' if b.get('emulated') else ''}; logits vs FP32 max abs diff "
        f"{b.get('max_abs_diff', 0):.1e}, {'same' if b.get('same_order') else 'OTHER'} order"
    )


def peer(r: dict[str, Any]) -> list[str]:
    p = r.get("peer") or {}
    if "models" in p:
        return _torch_peer(r)
    out = ["## The peer: sentence-transformers (PyTorch CPU, all-MiniLM-L6-v2)", ""]
    if "skipped" in p:
        return [*out, f"Not measured: {p['skipped']}", ""]
    head = ["torch", "sentence-transformers", "threads", "texts/s", "tokens/s", "spread"]
    row = [p.get("torch"), p.get("sentence_transformers"), p.get("threads")]
    row += [num(p.get("texts_per_s")), num(p.get("tokens_per_s"), 0), pct(p.get("spread"))]
    out += table([*head, "1 text p50 ms"], [[*row, num(p.get("single_ms_p50"), 2)]])
    return out
