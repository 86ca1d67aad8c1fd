"""The soak's report: RSS growth per worker between the first and last quarter after warm-up,
and the RSS curve as text and as a PNG (when matplotlib is installed)."""

from __future__ import annotations

import importlib
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def quarters(
    samples: list[dict[str, Any]], duration: float, start: float
) -> dict[str, tuple[list[int], list[int], list[int]]]:
    """Per worker pid: RSS values in the first quarter after warm-up (which ends `start` s in),
    in the last quarter, and all of them. A quarter no checkpoint fell in (a drain can outlast
    a short run's quarter) takes the nearest checkpoint after warm-up instead."""
    quarter = (duration - start) / 4
    by_pid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in samples:
        if s["pid"] != "master":
            by_pid[str(s["pid"])].append(s)
    out: dict[str, tuple[list[int], list[int], list[int]]] = {}
    for pid, rows in sorted(by_pid.items()):
        after = sorted((r for r in rows if r["t"] >= start), key=lambda r: r["t"])
        first = [r["rss"] for r in after if r["t"] < start + quarter] or [
            r["rss"] for r in after[:1]
        ]
        last = [r["rss"] for r in after if r["t"] >= duration - quarter] or [
            r["rss"] for r in after[-1:]
        ]
        out[pid] = (first, last, [r["rss"] for r in rows])
    return out


def rss_growth(samples: list[dict[str, Any]], duration: float, start: float) -> dict[str, Any]:
    """Per worker: median RSS in the first and last quarter after warm-up, and the growth."""
    out: dict[str, Any] = {}
    for pid, (first, last, every) in quarters(samples, duration, start).items():
        if not first or not last:
            out[pid] = {"samples": len(every), "note": "not sampled in both quarters"}
            continue
        a, b = statistics.median(first), statistics.median(last)
        out[pid] = {
            "samples": len(every),
            "first_quarter_rss_mib": round(a / MIB, 1),
            "last_quarter_rss_mib": round(b / MIB, 1),
            "growth_percent": round((b - a) / a * 100, 2),
            "min_rss_mib": round(min(every) / MIB, 1),
            "max_rss_mib": round(max(every) / MIB, 1),
        }
    return out


def curve(samples: list[dict[str, Any]], rows: int = 20) -> str:
    """The RSS curve as text: one line per time slice; per worker the idle RSS (at the
    checkpoints) and the median under load, in MiB."""
    if not samples:
        return "(no RSS samples)"
    pids = sorted({str(s["pid"]) for s in samples if s["pid"] != "master"})
    end = max(s["t"] for s in samples)
    step = max(end / rows, 1e-9)
    head = "".join(f"{'idle ' + p:>16}{'load ' + p:>16}" for p in pids)
    lines = [f"RSS (MiB) per worker: idle at checkpoints, median under load\n   t (s)  {head}"]
    for i in range(rows):
        lo, hi = i * step, (i + 1) * step
        cells = []
        for p in pids:
            for idle in (True, False):
                got = [
                    s["rss"]
                    for s in samples
                    if str(s["pid"]) == p and s["idle"] is idle and lo <= s["t"] <= hi
                ]
                cells.append(f"{statistics.median(got) / MIB:16.1f}" if got else f"{'-':>16}")
        lines.append(f"{hi:8.1f}  " + "".join(cells))
    return "\n".join(lines)


def plot(samples: list[dict[str, Any]], report: dict[str, Any], path: Path) -> str:
    """The RSS curve as a PNG, if matplotlib is installed (an optional extra: imported by name,
    so type checking does not depend on whether it is)."""
    try:
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")  # no display
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[soak]'): no PNG plot"
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for pid in sorted({str(s["pid"]) for s in samples}):
        under = [s for s in samples if str(s["pid"]) == pid and not s["idle"]]
        idle = [s for s in samples if str(s["pid"]) == pid and s["idle"]]
        name = "master" if pid == "master" else f"worker {pid}"
        (line,) = ax.plot(
            [r["t"] for r in under], [r["rss"] / MIB for r in under], alpha=0.35, linewidth=0.8
        )
        ax.plot(
            [r["t"] for r in idle],
            [r["rss"] / MIB for r in idle],
            color=line.get_color(),
            marker="o",
            markersize=3,
            label=f"{name}: idle (thin: under load)",
        )
    duration, start = report["duration_s"], report["warmup_s"]
    quarter = (duration - start) / 4
    ax.axvspan(0, start, color="0.92", label="warm-up")
    for x in (start + quarter, duration - quarter):
        ax.axvline(x, color="0.6", linestyle="--", linewidth=0.8)
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(
        f"soak: {report['requests_done']} requests, {report['failed']} failed; growth = idle "
        "RSS, last quarter vs first after warm-up (dashed)"
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"RSS plot: {path}"
