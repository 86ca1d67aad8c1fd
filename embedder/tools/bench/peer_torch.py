"""The peer on the `shapes` stand-ins: Hugging Face transformers on PyTorch CPU, on the SAME
seeded weights (the stand-in's ONNX initializers loaded into the HF modules), same threads,
same texts, in FP32 and in bf16 (the same modules cast, as `torch_dtype=torch.bfloat16` loads
them: the peer's best mode on a CPU with BF16 units; elsewhere torch emulates it, slowly, and
it runs once).

What sentence-transformers runs for BGE is a `BertModel` with CLS pooling and L2
normalisation (texts sorted by length, batches of 32, each padded to its longest); what its
`CrossEncoder` runs for bge-reranker-base is `XLMRobertaForSequenceClassification` (one logit
per pair, pairs sorted by length, batches of 32). Both are driven here as those wrappers drive
them, without the wrappers (they would need a Hub-style folder for random weights).

Before anything is timed, the peer must compute the same function as our FP32 level: a few
texts (or pairs) go through both, and the run is refused (`{"skipped": why}`) unless the
vectors agree (min cosine, max abs diff) or the logits do. It runs in its own process
(`python -m embedder.tools.bench.peer_torch ...` prints one JSON line) so PyTorch's threads
and memory never mix with ONNX Runtime's; ours is loaded there only for the check, then dropped.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embedder.tools.bench.machine import bf16_units
from embedder.tools.bench.peer_torch_embed import measure_embed
from embedder.tools.bench.peer_torch_rerank import measure_rerank
from embedder.tools.bench.stats import child_json

# Our FP32 level -> the stand-in shape its weights have (embedder.prepare.shapes.SHAPES).
PEER_OF = {
    "bge-small-q2-shape": "bge-small",
    "bge-base-q4-shape": "bge-base",
    "bge-reranker-base-shape": "bge-reranker-base",
}
# The levels timed alternately with each embedding peer (its FP32 weights, or INT8 from them).
COMPARED = {
    "bge-small-q2-shape": ("bge-small-q1-shape", "bge-small-q2-shape"),
    "bge-base-q4-shape": ("bge-base-q3-shape", "bge-base-q4-shape"),
}


def missing() -> str | None:
    """Why the peer cannot run here, or None."""
    for module in ("torch", "transformers"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (make bench installs torch and the `bench` extra)"
    return None


def run(argv: list[str], timeout: float) -> dict[str, Any]:
    """The peer's numbers from a child process, or {"skipped": why}."""
    why = missing()
    if why is not None:
        return {"skipped": why}
    cmd = [sys.executable, "-m", "embedder.tools.bench.peer_torch", *argv]
    return child_json(cmd, timeout, "the peer")


def main(argv: Sequence[str] | None = None) -> int:
    from embedder.sessions import disable_ort_telemetry

    disable_ort_telemetry()  # run alone too, not only as the benchmark's child
    prog = "python -m embedder.tools.bench.peer_torch"
    ap = argparse.ArgumentParser(prog=prog, description=__doc__)
    ap.add_argument("--model", required=True, choices=sorted(PEER_OF), help="our FP32 level")
    ap.add_argument("--models-root", required=True, type=Path)
    ap.add_argument("--texts", required=True, type=Path, help="JSON list (docs for a reranker)")
    ap.add_argument("--query", default="", help="the reranker's query")
    ap.add_argument("--calls", default="20:2,100:1", help="reranker: DOCS:CALLS,...")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--idle", type=int, default=8, help="texts embedded one at a time")
    ap.add_argument("--seconds", type=float, default=30.0, help="about, after loading")
    ap.add_argument("--ours", default="", help="our levels timed alternately with the peer")
    ap.add_argument(
        "--bf16-rounds",
        type=int,
        help="rounds (embeddings) or calls (reranker) of the bf16 peer at most, 0: all "
        "(default: all where the CPU has BF16 units, else 1: emulated bf16 is slow)",
    )
    a = ap.parse_args(sys.argv[1:] if argv is None else list(argv))
    torch: Any = importlib.import_module("torch")
    torch.set_num_threads(a.threads)
    texts = json.loads(a.texts.read_text(encoding="utf-8"))
    name = PEER_OF[a.model]
    bf16_rounds = a.bf16_rounds
    if bf16_rounds is None:
        bf16_rounds = 0 if bf16_units() else 1
    if name == "bge-reranker-base":
        calls = {int(n): int(c) for n, _, c in (p.partition(":") for p in a.calls.split(","))}
        out = measure_rerank(
            name,
            a.model,
            a.models_root,
            a.query,
            texts,
            calls=calls,
            batch=a.batch,
            max_tokens=a.max_tokens,
            threads=a.threads,
            bf16_calls=bf16_rounds,
        )
    else:
        out = measure_embed(
            name,
            a.model,
            a.models_root,
            texts,
            batch=a.batch,
            max_tokens=a.max_tokens,
            rounds=max(1, a.rounds),
            idle=a.idle,
            seconds=a.seconds,
            ours=[m for m in a.ours.split(",") if m],
            threads=a.threads,
            bf16_rounds=bf16_rounds,
        )
    transformers: Any = importlib.import_module("transformers")
    out |= {"threads": torch.get_num_threads(), "torch": str(torch.__version__)}
    out["transformers"] = str(transformers.__version__)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
