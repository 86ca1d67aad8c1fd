"""The peer on the `shapes` stand-ins: Hugging Face transformers on PyTorch CPU, on the SAME
seeded weights (the stand-in's ONNX initializers loaded into the HF modules), same threads,
same texts.

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
import gc
import importlib
import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedder.tools.bench.stats import child_json, median, percentile

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
MIN_COSINE = 0.9999  # vectors: the same function, up to float32 summation order
MAX_LOGIT_DIFF = 1e-3  # logits: the same
CHECK_TEXTS = 8


def missing() -> str | None:
    """Why the peer cannot run here, or None."""
    for module in ("torch", "transformers"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (make bench installs torch and the `bench` extra)"
    return None


def hf_weights(onnx_path: Path, classifier: bool) -> dict[str, np.ndarray]:
    """The graph's float initializers under Hugging Face names: linear weights are stored
    transposed (`<name>.weight_T`, [in, out]) and go back to torch's [out, in]."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    out: dict[str, np.ndarray] = {}
    prefix = "roberta." if classifier else ""
    for t in model.graph.initializer:
        name = t.name
        if not name.startswith(("embeddings.", "encoder.", "pooler.", "classifier.")):
            continue  # graph constants (shapes, scalars)
        arr = numpy_helper.to_array(t)
        if arr.dtype != np.float32:
            continue  # position ids, padding index: buffers the HF module makes itself
        if name.endswith(".weight_T"):
            name, arr = name.removesuffix("_T"), arr.T
        out[name if name.startswith("classifier.") else prefix + name] = np.ascontiguousarray(arr)
    del model
    return out


def hf_model(name: str, onnx_path: Path) -> Any:
    """The HF module with the stand-in's weights; refuses a weight it would not load."""
    torch: Any = importlib.import_module("torch")
    transformers: Any = importlib.import_module("transformers")
    from embedder.prepare.shapes import SHAPES

    shape = SHAPES[name]
    c = shape.config
    common = {
        "vocab_size": shape.vocab_size,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "intermediate_size": c.intermediate_size,
        "hidden_act": "gelu",
        "max_position_embeddings": c.max_positions,
        "type_vocab_size": c.type_vocab_size,
        "layer_norm_eps": c.layer_norm_eps,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    classifier = shape.head == "classifier"
    if classifier:
        cfg = transformers.XLMRobertaConfig(
            **common, pad_token_id=c.padding_idx, num_labels=1, classifier_dropout=0.0
        )
        model = transformers.XLMRobertaForSequenceClassification(cfg)
    else:
        model = transformers.BertModel(transformers.BertConfig(**common), add_pooling_layer=True)
    weights = hf_weights(onnx_path, classifier)
    state = {k: torch.from_numpy(v) for k, v in weights.items()}
    result = model.load_state_dict(state, strict=False)
    params = {n for n, _ in model.named_parameters()}
    unset = sorted(params - set(state))
    if unset or result.unexpected_keys:
        raise ValueError(
            f"weights do not map: unset {unset[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    model.eval()
    return model


def _tokenizer(path: Path, max_tokens: int) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_tokens)
    tok.enable_padding()
    return tok


class EmbedPeer:
    """BertModel + CLS pooling + L2 normalisation, as SentenceTransformer.encode drives it."""

    def __init__(self, model: Any, tokenizer: Any, batch: int) -> None:
        self.torch: Any = importlib.import_module("torch")
        self.model, self.tok, self.batch = model, tokenizer, batch

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.model.config.hidden_size), np.float32)
        for start in range(0, len(texts), self.batch):
            rows = order[start : start + self.batch]
            enc = self.tok.encode_batch([texts[i] for i in rows])
            ids = self.torch.tensor([e.ids for e in enc])
            feeds = {
                "input_ids": ids,
                "attention_mask": self.torch.tensor([e.attention_mask for e in enc]),
                "token_type_ids": self.torch.zeros_like(ids),
            }
            cls = self.model(**feeds).last_hidden_state[:, 0]
            cls = self.torch.nn.functional.normalize(cls, p=2, dim=1)
            out[rows] = cls.numpy()
        return out


class PairPeer:
    """XLMRobertaForSequenceClassification on (query, doc) pairs, as CrossEncoder.predict
    (sentence-transformers 6) drives it: pairs sorted by length, batches of 32, each padded to
    its longest, one logit per pair, back in the caller's order."""

    def __init__(self, model: Any, tokenizer: Any, batch: int) -> None:
        self.torch: Any = importlib.import_module("torch")
        self.model, self.tok, self.batch = model, tokenizer, batch

    def logits(self, query: str, docs: Sequence[str]) -> np.ndarray:
        order = np.argsort([-(len(query) + len(d)) for d in docs], kind="stable")
        out = np.zeros(len(docs), np.float32)
        for start in range(0, len(docs), self.batch):
            rows = order[start : start + self.batch]
            enc = self.tok.encode_batch([(query, docs[i]) for i in rows])
            feeds = {
                "input_ids": self.torch.tensor([e.ids for e in enc]),
                "attention_mask": self.torch.tensor([e.attention_mask for e in enc]),
            }
            out[rows] = self.model(**feeds).logits[:, 0].numpy()
        return out


def _ours(models_root: Path, model_id: str) -> tuple[Any, Any]:
    """Our FP32 level as a worker opens it (for the check only)."""
    from embedder.catalog import SHAPES
    from embedder.store.files import ModelStore

    store = ModelStore(models_root, SHAPES, offline=True)
    return store, SHAPES.get(model_id)


def check_embed(
    peer: EmbedPeer, models_root: Path, model_id: str, texts: Sequence[str]
) -> dict[str, Any]:
    from embedder.tools.bench.engine import open_embedder

    store, spec = _ours(models_root, model_id)
    ours = open_embedder(store, spec, 1)
    mine = np.asarray(ours.embed(texts).vectors, np.float32)
    del ours
    gc.collect()
    theirs = peer.encode(texts)
    cos = np.sum(mine * theirs, axis=1) / (
        np.linalg.norm(mine, axis=1) * np.linalg.norm(theirs, axis=1)
    )
    return {
        "texts": len(texts),
        "min_cosine": float(cos.min()),
        "max_abs_diff": float(np.abs(mine - theirs).max()),
        "agrees": bool(cos.min() >= MIN_COSINE),
    }


def check_pairs(
    peer: PairPeer, models_root: Path, model_id: str, query: str, docs: Sequence[str]
) -> dict[str, Any]:
    from embedder.reranker import CrossEncoderReranker, Doc, PairScorer
    from embedder.sessions import SessionConfig, open_session
    from embedder.tokens import load_tokenizer

    store, spec = _ours(models_root, model_id)
    assert spec.onnx and spec.tokenizer
    session = open_session(store.path(spec, spec.onnx), SessionConfig(threads=1))
    tok = store.path(spec, spec.tokenizer)
    scorer = PairScorer(
        spec, session, load_tokenizer(tok, spec.max_tokens), load_tokenizer(tok, spec.max_tokens)
    )
    ranking = CrossEncoderReranker(scorer).rerank(
        query, [Doc(str(i), d) for i, d in enumerate(docs)], raw=True
    )
    mine = np.zeros(len(docs))
    for r in ranking.results:
        mine[r.index] = r.score
    del scorer, session
    gc.collect()
    theirs = peer.logits(query, docs).astype(np.float64)
    diff = float(np.abs(mine - theirs).max())
    return {"pairs": len(docs), "max_abs_diff": diff, "agrees": diff <= MAX_LOGIT_DIFF}


def _our_embedders(models_root: Path, ids: Sequence[str], threads: int) -> dict[str, list[Any]]:
    """Our levels as a worker runs them: one single-thread session shared by a runner thread
    per core (the limit's Nx1 layout)."""
    from embedder.tools.bench.engine import open_embedder

    out: dict[str, list[Any]] = {}
    for model_id in ids:
        store, spec = _ours(models_root, model_id)
        one = open_embedder(store, spec, 1)
        out[model_id] = [one] * threads
    return out


def measure_embed(
    name: str,
    model_id: str,
    models_root: Path,
    texts: Sequence[str],
    *,
    batch: int,
    max_tokens: int,
    rounds: int,
    idle: int,
    seconds: float,
    ours: Sequence[str],
    threads: int,
) -> dict[str, Any]:
    """The peer's texts/s over the corpus, in rounds interleaved with ours on the levels `ours`
    (ours, then the peer, round after round): on a shared machine the ratio of each round pair
    is what holds, not either figure alone."""
    from embedder.catalog import SHAPES
    from embedder.tools.bench.engine import round_rate

    spec = SHAPES.get(model_id)
    assert spec.onnx and spec.tokenizer
    store, _ = _ours(models_root, model_id)
    began = time.perf_counter()
    model = hf_model(name, store.path(spec, spec.onnx))
    peer = EmbedPeer(model, _tokenizer(store.path(spec, spec.tokenizer), max_tokens), batch)
    load_s = time.perf_counter() - began
    torch: Any = importlib.import_module("torch")
    with torch.inference_mode():
        check = check_embed(peer, models_root, model_id, _check_texts(texts))
        if not check["agrees"]:
            why = f"the peer does not compute our FP32 function: {check}"
            return {"skipped": why, "check": check}
        engines = _our_embedders(models_root, ours, threads)
        for group in engines.values():
            group[0].embed(texts[:4])  # warm-up
        until = time.perf_counter() + seconds
        peer.encode(texts[: min(len(texts), batch)])  # warm-up
        rates: list[float] = []
        mine: dict[str, list[float]] = {m: [] for m in engines}
        for r in range(rounds):
            if r >= 2 and time.perf_counter() > until:
                break
            for m, group in engines.items():
                mine[m].append(round_rate(group, texts))
            t0 = time.perf_counter()
            peer.encode(texts)
            rates.append(len(texts) / (time.perf_counter() - t0))
        del engines
        gc.collect()
        singles: list[float] = []
        for i, t in enumerate(texts[:idle]):
            if i >= 4 and time.perf_counter() > until:
                break
            t0 = time.perf_counter()
            peer.encode([t])
            singles.append((time.perf_counter() - t0) * 1000)
    mid = median(rates)
    paired = {m: [a / b for a, b in zip(v, rates, strict=True)] for m, v in mine.items()}
    return {
        "model": model_id,
        "peer": "BertModel + CLS pooling (what sentence-transformers runs for BGE)",
        "check": check,
        "texts_per_s": mid,
        "rounds": rates,
        "spread": (max(rates) - min(rates)) / mid if mid else 0.0,
        "single_ms_p50": median(singles),
        "singles": len(singles),
        "load_s": load_s,
        "max_tokens": max_tokens,
        "interleaved": {
            m: {"texts_per_s": median(v), "rounds": v, "ratio": median(paired[m])}
            for m, v in mine.items()
        },
    }


def measure_rerank(
    name: str,
    model_id: str,
    models_root: Path,
    query: str,
    docs: Sequence[str],
    *,
    calls: dict[int, int],
    batch: int,
    max_tokens: int,
    threads: int,
) -> dict[str, Any]:
    """RAG calls (1 query + n docs), `calls[n]` times each, ours (as a worker runs the
    cross-encoder) and the peer's alternately: latency per call and pairs/s of each."""
    from embedder.catalog import SHAPES
    from embedder.loading import Opener
    from embedder.planning import RunLimits
    from embedder.reranker import Doc
    from embedder.sessions import SessionConfig

    spec = SHAPES.get(model_id)
    assert spec.onnx and spec.tokenizer
    store, _ = _ours(models_root, model_id)
    began = time.perf_counter()
    model = hf_model(name, store.path(spec, spec.onnx))
    peer = PairPeer(model, _tokenizer(store.path(spec, spec.tokenizer), max_tokens), batch)
    load_s = time.perf_counter() - began
    torch: Any = importlib.import_module("torch")
    out: dict[str, Any] = {"model": model_id, "load_s": load_s, "calls": {}}
    out["peer"] = "XLMRobertaForSequenceClassification (what CrossEncoder runs)"
    with torch.inference_mode():
        check = check_pairs(peer, models_root, model_id, query, docs[:CHECK_TEXTS])
        out["check"] = check
        if not check["agrees"]:
            why = f"the peer does not compute our FP32 function: {check}"
            return {"skipped": why, "check": check}
        config = SessionConfig(threads=threads)
        ours = Opener(store, config, RunLimits(), max_queue_wait=300).reranker(spec, None)
        items = [Doc(str(i), d) for i, d in enumerate(docs)]
        ours.rerank(query, items[:4])  # warm-up
        peer.logits(query, docs[:4])
        took: dict[str, dict[int, list[float]]] = {"peer": {}, "ours": {}}
        for n, count in calls.items():
            for _ in range(count):
                t0 = time.perf_counter()
                ours.rerank(query, items[:n])
                t1 = time.perf_counter()
                peer.logits(query, docs[:n])
                took["ours"].setdefault(n, []).append(t1 - t0)
                took["peer"].setdefault(n, []).append(time.perf_counter() - t1)
        del ours
        gc.collect()
    summary: dict[str, dict[str, Any]] = {}
    for who, by_n in took.items():
        pairs = sum(n * len(ts) for n, ts in by_n.items())
        seconds = sum(sum(ts) for ts in by_n.values())
        summary[who] = {"pairs_per_s": pairs / seconds if seconds else 0.0, "calls": {}}
        for n, ts in by_n.items():
            ms = [t * 1000 for t in ts]
            row = {"p50_ms": median(ms), "p99_ms": percentile(ms, 99), "n": len(ms)}
            summary[who]["calls"][str(n)] = row
    out |= summary["peer"]
    out["ours"] = summary["ours"] | {
        "model": model_id,
        "threads": threads,
        "layout": f"{threads} runners, one shared single-thread session (as a worker); "
        "measured in the peer's process, call by call alternately with the peer",
    }
    return out


def _check_texts(texts: Sequence[str]) -> list[str]:
    """A few texts of varied lengths (the corpus' first ones and its longest)."""
    longest = sorted(texts, key=len)[-2:]
    return [*texts[: CHECK_TEXTS - len(longest)], *longest]


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
    a = ap.parse_args(sys.argv[1:] if argv is None else list(argv))
    torch: Any = importlib.import_module("torch")
    torch.set_num_threads(a.threads)
    texts = json.loads(a.texts.read_text(encoding="utf-8"))
    name = PEER_OF[a.model]
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
        )
    transformers: Any = importlib.import_module("transformers")
    out |= {"threads": torch.get_num_threads(), "torch": str(torch.__version__)}
    out["transformers"] = str(transformers.__version__)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
