"""The benchmark: `make bench`, `python -m embedder.tools.bench` or `embedder bench`.

In one run on this machine it measures, per quality level, the in-process engine (the limit),
the live server (a real gunicorn under load from a separate process, over TCP and the unix
socket, for two worker layouts) and sentence-transformers on PyTorch (the peer, when the
`bench` extra is installed), then writes `artifacts/bench/latest.json` and `latest.md`.
Nothing heavy is imported until `main` runs.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from embedder.sessions import disable_ort_telemetry

    disable_ort_telemetry()  # this process runs the engine, and its children inherit it
    from embedder.tools.bench.run import main as run_main

    return run_main(argv)
