"""An XLM-RoBERTa-style tokenizer and cross-encoder graph for tests, built here (no Hub).

bge-reranker-base is XLM-R: its pairs are `<s> q </s></s> d </s>` (four special tokens, all
type id 0) and its 514 position rows start counting real tokens at padding_idx + 1 = 2, so a
pair may hold at most 512 tokens. The tokenizer below keeps the starter WordPiece model (no
SentencePiece file ships on PyPI) but gives it XLM-R's special tokens at XLM-R's ids
(`<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3, in place of [PAD] and three [unused] rows) and its
post-processor: `RobertaProcessing`, or the `TemplateProcessing` that transformers' XLM-R
converter writes into the Hub's tokenizer.json; both give the same ids. The graph is the
reranker stand-in's architecture (`embedder.prepare.shapes`) made narrow and one layer deep;
its positions count the attention mask, or, as transformers' XLM-R (and so the Hub's ONNX
export) does, the ids that are not `<pad>`: the engine pads ids with 0, which is `<s>` here.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import AddedToken, Tokenizer, processors

from embedder.prepare.bert_onnx import make_bert_model
from embedder.prepare.shapes import SHAPES, Shape, random_weights, with_layers
from tests.models import tokenizer_json as wordpiece_json

BOS, PAD, EOS, UNK = 0, 1, 2, 3  # XLM-R's ids; PAD is also the graph's padding_idx
SPECIALS = {"<s>": BOS, "<pad>": PAD, "</s>": EOS, "<unk>": UNK}
VOCAB = 30522  # the starter WordPiece vocabulary, specials renamed in place
PostProcessor = Literal["roberta", "xlmr-template"]
Positions = Literal["mask", "input_ids"]
WORDS = ("apple", "river", "stone", "music", "garden", "window", "paper", "light")


def words(n: int, start: int = 0) -> str:
    """n words of one WordPiece token each, from the `start`-th of WORDS on."""
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(n))


def post_processor(kind: PostProcessor) -> processors.PostProcessor:
    if kind == "roberta":
        return processors.RobertaProcessing(("</s>", EOS), ("<s>", BOS))
    return processors.TemplateProcessing(  # transformers' XLMRobertaConverter
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", BOS), ("</s>", EOS)],
    )


def build_tokenizer(out: Path, kind: PostProcessor = "roberta") -> Path:
    """A tokenizer.json at `out`: WordPiece text pieces, XLM-R's specials and pair format."""
    raw = json.loads(wordpiece_json().read_text(encoding="utf-8"))
    vocab: dict[str, int] = raw["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    for token, i in SPECIALS.items():
        del vocab[by_id[i]]
        vocab[token] = i
    for bert_special in ("[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        vocab.pop(bert_special)  # plain WordPiece rows no text maps to
    raw["model"]["unk_token"] = "<unk>"
    raw["added_tokens"] = []
    raw["post_processor"] = None
    tok = Tokenizer.from_str(json.dumps(raw))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok.post_processor = post_processor(kind)
    tok.no_padding()
    tok.no_truncation()
    tok.save(str(out))
    return out


def tiny_shape() -> Shape:
    """bge-reranker-base's stand-in (514 positions, padding_idx 1, one token type, classifier
    head, input_ids + attention_mask -> logits) at one layer of width 96: seconds, not GB."""
    shape = with_layers(SHAPES["bge-reranker-base"], 1, VOCAB)
    return replace(shape, config=replace(shape.config, hidden_size=96, intermediate_size=384))


def build_graph(out: Path, seed: int = 0, positions: Positions = "mask") -> Path:
    shape = tiny_shape()
    model = make_bert_model(random_weights(shape, seed), shape.config, shape.head)
    if positions == "input_ids":
        _positions_from_ids(model.graph)
    onnx.save(model, str(out))
    return out


def _positions_from_ids(graph: onnx.GraphProto) -> None:
    """cumsum(ids != <pad>) * (ids != <pad>) + padding_idx, as create_position_ids_from_input_ids
    computes them, in place of the attention mask in the stand-in's position ids."""
    graph.initializer.append(numpy_helper.from_array(np.array(PAD, np.int64), "tests.pad_id"))
    not_pad = [
        helper.make_node("Equal", ["input_ids", "tests.pad_id"], ["tests.is_pad"]),
        helper.make_node("Not", ["tests.is_pad"], ["tests.not_pad_bool"]),
        helper.make_node("Cast", ["tests.not_pad_bool"], ["tests.not_pad"], to=TensorProto.INT64),
    ]
    rewired = 0
    for node in graph.node:
        if node.name in ("embeddings/position/CumSum", "embeddings/position/Mul"):
            node.input[:] = ["tests.not_pad" if i == "attention_mask" else i for i in node.input]
            rewired += 1
    assert rewired == 2, "the stand-in's position ids are no longer built as expected"
    for i, node in enumerate(not_pad):
        graph.node.insert(i, node)
