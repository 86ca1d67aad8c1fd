"""The closest peer: fastembed (Qdrant's, on ONNX Runtime), all-MiniLM-L6-v2 loaded from a
local folder that holds the project's own FP32 model.onnx (fastembed cannot download here, and
so it runs the very graph our FP32 level runs: what differs is the library around it).

The model is registered as a custom model (mean pooling, L2 normalisation: what
all-MiniLM-L6-v2 is) and opened with `specific_model_path`, on ONNX Runtime's CPU provider
with `threads` intra-op threads, as a user would run it: `embed(texts, batch_size)` in the
texts' order (fastembed does not sort by length). A `peer_serve` child, run by the Python of
the virtual environment `fastembed_env` makes: it imports nothing of the project but
`peer_serve`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedder.tools.bench.peer_serve import arguments, read_texts, serve

NAME = "local/all-minilm-l6-v2-fp32"  # a name fastembed does not know: the folder is the model
DIMS = 384


class _Encoder:
    def __init__(self, model: Any, batch: int) -> None:
        self.model, self.batch = model, batch

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack(list(self.model.embed(list(texts), batch_size=self.batch)))


def load(folder: Path, cache: Path, threads: int, batch: int) -> tuple[_Encoder, dict[str, Any]]:
    fastembed: Any = importlib.import_module("fastembed")
    described: Any = importlib.import_module("fastembed.common.model_description")
    fastembed.TextEmbedding.add_custom_model(
        model=NAME,
        pooling=described.PoolingType.MEAN,
        normalization=True,
        sources=described.ModelSource(hf=NAME),  # never fetched: the folder is given
        dim=DIMS,
        model_file="model.onnx",
    )
    model = fastembed.TextEmbedding(
        model_name=NAME,
        specific_model_path=str(folder),
        cache_dir=str(cache),
        threads=threads,
        providers=["CPUExecutionProvider"],
    )
    info = {
        "threads": threads,
        "fastembed": importlib.metadata.version("fastembed"),
        "onnxruntime": importlib.metadata.version("onnxruntime"),
    }
    return _Encoder(model, batch), info


def main(argv: Sequence[str] | None = None) -> int:
    ap = arguments("peer_fastembed", __doc__)
    ap.add_argument("--model-dir", required=True, type=Path, help="model.onnx and tokenizer")
    ap.add_argument("--cache", required=True, type=Path, help="fastembed's cache folder")
    a = ap.parse_args(sys.argv[1:] if argv is None else list(argv))
    texts = read_texts(a.texts)
    return serve(lambda: load(a.model_dir, a.cache, a.threads, a.batch), texts, 32)


if __name__ == "__main__":
    sys.exit(main())
