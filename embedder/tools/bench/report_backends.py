"""The runtimes section in the report: its target (`auto` is never slower than ONNX Runtime,
per level) and its Markdown lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from embedder.backends.cpu import Cpu
from embedder.tools.bench.markdown_cells import num, others, table

# The goal on every CPU, read where the bench measured it: what `auto` chose for a
# level is at least this share of ONNX Runtime's rate, on the batch set and on lone texts.
AUTO_ORT = ("auto_ort", "auto >= 95% of ONNX Runtime per level (batched and lone)", 0.95)

# The goals on CPUs with BF16 units (AMX, AVX512_BF16), read from the same rounds:
# each level as `auto` runs it against ONNX Runtime FP32, and an INT8 level against its FP32
# sibling, each on what `auto` chose for it. Elsewhere `AUTO_ORT` is the goal.
BF16_FP32 = (
    "bf16_fp32",
    "BGE-shaped FP32 level by default >= 4x ONNX Runtime FP32 (BF16 units)",
    4.0,
)
BF16_RERANK = ("bf16_rerank", "reranker by default >= 5x ONNX Runtime FP32 (BF16 units)", 5.0)
INT8_SIBLING = (
    "int8_sibling",
    "INT8 level >= 1.2x its FP32 sibling, each on auto's choice (BF16 units)",
    1.2,
)

Target = Callable[[tuple[str, str, float], str, float | None], dict[str, Any]]


def bf16_units(result: dict[str, Any]) -> list[str]:
    """The CPU's BF16 units as the run saw them (the runtimes section's flags, else the
    peers', else the machine's flags)."""
    flags = result.get("backends", {}).get("bf16_flags")
    if flags is None:
        flags = result.get("peers", {}).get("bf16_units")
    if flags is None:  # the units among the flags, as the backend choice reads them
        flags = Cpu("", tuple(result.get("machine", {}).get("cpu_flags") or ())).bf16
    return list(flags or [])


def _chosen(lv: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in lv.get("contenders", []) if c.get("chosen")), None)


def bf16_targets(
    result: dict[str, Any], make: Target, sibling: Callable[[str, str], str | None]
) -> list[dict[str, Any]]:
    """The BF16-units goals (`BF16_FP32`, `BF16_RERANK`, `INT8_SIBLING`); none elsewhere.
    `sibling(catalog, model)`: the FP32 model an INT8 level is quantized from."""
    if not bf16_units(result):
        return []
    levels = result.get("backends", {}).get("levels", [])
    by_model = {lv["model"]: lv for lv in levels if "model" in lv}  # not a skipped level
    if not by_model:  # the section did not run (no openvino, no time): said, not left out
        why = result.get("backends", {}).get("skipped") or "the runtimes section did not run"
        return [make(t, why, None) for t in (BF16_FP32, BF16_RERANK, INT8_SIBLING)]
    out = []
    for lv in levels:
        chosen = _chosen(lv)
        if chosen is None:
            continue
        where = f"{lv['key']} {chosen['label']}"
        if lv.get("kind") == "rerank":
            out.append(make(BF16_RERANK, where, chosen.get("vs_ort")))
        elif lv.get("precision") == "fp32" and lv["key"].startswith("shapes:"):
            out.append(make(BF16_FP32, where, chosen.get("vs_ort")))
        elif lv.get("precision") == "int8":
            fp32 = by_model.get(sibling(lv["key"].split(":")[0], lv["model"]) or "")
            theirs = _chosen(fp32) if fp32 else None
            mine, base = chosen.get("texts_per_s"), theirs and theirs.get("texts_per_s")
            value = mine / base if mine and base else None
            label = f" / {fp32['key']} {theirs['label']}" if fp32 and theirs else ""
            out.append(make(INT8_SIBLING, where + label, value))
    return out


def targets(result: dict[str, Any], make: Target) -> list[dict[str, Any]]:
    out = []
    for lv in result.get("backends", {}).get("levels", []):
        chosen = next((c for c in lv.get("contenders", []) if c.get("chosen")), None)
        if chosen is None:
            continue
        ratios = [chosen.get(k) for k in ("vs_ort", "lone_vs_ort")]
        value = min((r for r in ratios if r is not None), default=None)
        out.append(make(AUTO_ORT, f"{lv['key']} {chosen['label']}", value))
    return out


def _ident(b: dict[str, Any]) -> str:
    return f" ({b['cpu_ident']})" if b.get("cpu_ident") else ""


def _how(lv: dict[str, Any]) -> str:
    a = lv["auto"]
    if sum(1 for c in lv["contenders"] if c.get("auto")) < 2:
        return "its only candidate here"
    return f"measured now ({a['seconds']:.1f} s)" if a["measured_now"] else "the kept choice"


def _against(lv: dict[str, Any]) -> str:
    """What auto's choice measured against ONNX Runtime in the rounds, and whether that
    meets the goal (`AUTO_ORT`)."""
    chosen = next((c for c in lv["contenders"] if c.get("chosen")), None)
    if chosen is None or chosen is lv["contenders"][0] or chosen.get("vs_ort") is None:
        return ""
    wall = [chosen.get("vs_ort"), chosen.get("lone_vs_ort")]
    below = min(v for v in wall if v is not None) < AUTO_ORT[2]
    return (
        f". In the rounds it runs at {_x(wall[0])} ONNX Runtime's rate batched and "
        f"{_x(wall[1])} on lone texts (wall time){': below ' if below else ', within '}"
        f"the goal of {AUTO_ORT[2]:.2f}x"
    )


def _units(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


def section(r: dict[str, Any]) -> list[str]:
    b = r.get("backends")
    if not b:
        return []
    out = ["## Runtimes side by side: ONNX Runtime and OpenVINO", ""]
    bf16 = b.get("openvino_bf16")
    seen = "" if bf16 is None else f"; OpenVINO computes in BF16 here: {'yes' if bf16 else 'no'}"
    out += [
        f"- CPU: {b['cpu']}{_ident(b)}; flags: {', '.join(b['cpu_flags']) or 'no AVX flags'}; "
        f"BF16 units: {_units(b['bf16_flags'])}; INT8 dot-product units: "
        f"{_units(b['int8_flags'])}{seen}",
    ]
    if "skipped" in b:
        return [*out, f"- skipped: {b['skipped']}", ""]
    out.append(
        f"- openvino {b['openvino']}, onnxruntime {r.get('machine', {}).get('onnxruntime')}; "
        f"a worker's runner layout: one model shared by {b['runners']} runner threads (ONNX "
        f"Runtime: one single-thread session; OpenVINO: one compiled model, a stream per runner)"
    )
    rows = []
    for lv in b.get("levels", []):
        for c in lv.get("contenders", []):
            rows.append(
                [
                    lv["key"],
                    lv.get("model"),
                    _label(c),
                    c.get("computes"),
                    _of(c),
                    c.get("error") or num(c.get("texts_per_s")),
                    _x2(c.get("vs_ort"), c.get("cpu_vs_ort")),
                    num(c.get("lone_ms_p50"), 2),
                    _x2(c.get("lone_vs_ort"), c.get("lone_cpu_vs_ort")),
                    num(c.get("min_cosine"), 6),
                    num(c.get("open_s"), 2),
                ]
            )
    head = ["level", "model", "runtime", "computes", "candidate of", "batched /s"]
    head += ["vs ORT (wall / CPU)", "lone ms p50", "lone vs ORT (wall / CPU)"]
    head += ["min cos vs ORT FP32", "open s"]
    out += ["", *table(head, rows)]
    for lv in b.get("levels", []):
        if "skipped" in lv:
            out.append(f"- {lv['key']}: skipped ({lv['skipped']})")
            continue
        a = lv["auto"]
        how = _how(lv)
        why = "" if how.startswith("its only") else f": {a['why']}"
        out.append(
            f"- {lv['key']} {lv['model']} ({lv['rounds']} rounds of {lv['items']} "
            f"{'pairs' if lv['kind'] == 'rerank' else 'texts'} and {lv['lone_items']} lone; "
            f"others' CPU {others(lv.get('others_cpu_share'))}): **auto** takes "
            f"{a['backend']} {a['compute_precision']}, {how}{why}{_against(lv)}"
        )
    out += [
        "",
        "_Contenders: the service's candidates for the level on this CPU (`auto`), and those "
        "`EMBEDDER_EXACT_FP32=1` adds. Each round runs every contender on the batch set (the "
        "corpus tokenized, planned in length-sorted sub-batches the runners pull) and on each "
        "lone text alone, in an order that rotates; batched /s is the median round, the ratios "
        "to ONNX Runtime are medians of within-round ratios (lone: per text), of wall time and "
        "of this process's CPU time (what the runs cost the cores: steadier than wall time "
        "where other processes load the machine; a runtime whose threads wait spinning pays "
        "for it there). Min cosine: "
        "against ONNX Runtime FP32 on the batch set (an INT8 level: its FP32 source file; a "
        "reranker: its logits as one vector). open s: the session's open (OpenVINO: compile, "
        "or import from its cache in the models root). auto: opened as a worker's first load "
        "does (it measures the calibration batch, or reads the choice kept in the models root)._",
        "",
    ]
    return out


_GRAPHS = {"fp32": " (its FP32 source)", "int8-weights": " (int8 weights of its FP32 source)"}


def _label(c: dict[str, Any]) -> str:
    text = c["label"] + _GRAPHS.get(c["graph"], "")
    return f"**{text}** (auto's)" if c.get("chosen") else text


def _of(c: dict[str, Any]) -> str:
    if c.get("auto") and c.get("exact_fp32"):
        return "auto, exact FP32"
    if c.get("auto"):
        return "auto"
    return "exact FP32" if c.get("exact_fp32") else "not offered on this CPU"


def _x(v: object) -> str | None:
    return None if not isinstance(v, int | float) else f"{v:.2f}x"


def _x2(wall: object, cpu: object) -> str | None:
    if not isinstance(wall, int | float):
        return None
    return f"{wall:.2f}x / {cpu:.2f}x" if isinstance(cpu, int | float) else _x(wall)
