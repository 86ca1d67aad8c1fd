"""The short soak that runs in `make test` (`make soak` is the long one): `python -m
embedder.tools.soak` starts a real gunicorn (starter catalog, the default layout on 2 cores: 1
worker x 2 runners, so the runners share each model's session) and loads it from its own
process over the unix sockets for 60 s or 1500 requests, whichever comes first. No request
may fail, and each worker's idle RSS may not grow more than 10% from the first to the last
quarter after warm-up: a gross leak. The 5 % verdict belongs to `make soak` (an hour; the
BGE-sized 1-hour soaks read -1.4 %), since a minute leaves one or two idle readings per
quarter."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration import server as srv
from tests.polling import PATIENCE

pytestmark = pytest.mark.integration

# One worker's idle readings in a 60 s run here: 441, 441, 442, 469, 442, 464 MiB (no trend,
# +-3 %), so a quarter's median of 1-2 of them read +5.2 % once: 10 % catches a leak, not that.
REQUESTS, SECONDS, MAX_GROWTH = 1500, 60, 10.0
# Warm-up: the first 40 % of the run. ~90 requests of random shapes over 10 kinds reach their
# largest shapes (the allocators' high-water marks) only well into a run this short; a first
# such step after a 25 % warm-up read as "growth" (+5.6 %, +5.8 % in 2 of 6 runs here).
WARMUP = 0.4
# The runtime is named, not chosen: `auto` picks a model's runtime by timing it at first start
# (OpenVINO BF16 on a CPU with BF16 units, either by a timing elsewhere), and the soak holds
# the engine of record to flat. OpenVINO's memory levels off only once each model has run its
# grid of shapes, which random batches take minutes to do (docs/openvino.md, "Growth under
# varied shapes"): `test_openvino_grid` holds that in-process.
BACKEND = srv.BACKEND  # the suite's servers' runtime: the engine of record


def test_short_soak(tmp_path: Path, built_root: Path) -> None:
    out = tmp_path / "soak"
    args = ["--requests", str(REQUESTS), "--seconds", str(SECONDS), "--out", str(out)]
    args += ["--models-root", str(built_root), "--max-growth", str(MAX_GROWTH)]
    args += ["--warmup", str(WARMUP), "--workers", "1", "--threads", "2"]
    args += ["--env", f"EMBEDDER_BACKEND={BACKEND}"]
    run = subprocess.run(
        [sys.executable, "-m", "embedder.tools.soak", *args],
        cwd=srv.ROOT,
        capture_output=True,
        text=True,
        timeout=SECONDS + 4 * PATIENCE,  # a bound for start-up, the last drain and shutdown
    )
    report = json.loads((out / "soak.json").read_text())
    rss = report["rss"]
    print(
        f"\nsoak: {report['requests_done']} requests in {report['duration_s']} s, "
        f"{report['failed']} failed; idle RSS per worker, first vs last quarter after warm-up: "
        + ", ".join(
            f"{pid} {r.get('first_quarter_rss_mib')} -> {r.get('last_quarter_rss_mib')} MiB "
            f"({r.get('growth_percent')}%)"
            for pid, r in rss.items()
        )
    )
    print(run.stdout[-2500:])
    assert report["failed"] == 0, report["errors"]
    assert report["service_env"] == {"EMBEDDER_BACKEND": BACKEND}
    assert report["worker_restarts"] == 0 and report["gunicorn_exit"] == 0
    # Every level by JSON-RPC and by REST id, and rerank through both, was exercised.
    assert set(report["by_kind"]) == set(report["rotation"]) and len(report["rotation"]) == 10
    assert len(rss) == 1 and all("growth_percent" in r for r in rss.values()), rss
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "soak-rss.png").stat().st_size > 0
    else:
        assert "no PNG plot" in run.stdout
    grown = {pid: r["growth_percent"] for pid, r in rss.items() if r["growth_percent"] > MAX_GROWTH}
    # Flat thanks to embedder.memory.IdleTrim (glibc otherwise keeps freed batch buffers).
    assert not grown, grown
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
