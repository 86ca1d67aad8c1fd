"""The cross-encoder at 512 tokens with XLM-RoBERTa's special tokens (bge-reranker-base):
`<s> q </s></s> d </s>` holds four specials, and the 514 position rows fit 512 real tokens
after the padding offset. Tokenizer and graph are built here (`tests.roberta`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from embedder.catalog import ModelSpec
from embedder.reranker import CrossEncoderReranker, Doc, PairScorer
from embedder.sessions import SessionConfig, open_session
from embedder.tokens import load_tokenizer
from tests import roberta
from tests.roberta import BOS, EOS, PAD, words

WINDOW = 512
SPEC = ModelSpec(
    id="xlmr-tiny-rerank",
    kind="rerank",
    description="test graph, random weights",
    source="tests",
    files=(),
    max_tokens=WINDOW,
    precision="fp32",
    onnx="model.onnx",
    tokenizer="tokenizer.json",
    scorer="cross-encoder",
)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same weights, positions counted from the mask or (as the Hub export) from the ids."""
    tmp = tmp_path_factory.mktemp("xlmr")
    return {
        kind: roberta.build_graph(tmp / f"{kind}.onnx", positions=kind)
        for kind in ("mask", "input_ids")
    }


@pytest.fixture(scope="module")
def graph(graphs: dict[str, Path]) -> Path:
    return graphs["mask"]


@pytest.fixture(scope="module", params=["roberta", "xlmr-template"])
def tokenizer_path(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return roberta.build_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json", request.param)


@pytest.fixture(scope="module")
def scorer(graph: Path, tokenizer_path: Path) -> PairScorer:
    return _scorer(graph, tokenizer_path)


def _scorer(graph: Path, tokenizer_path: Path) -> PairScorer:
    """Loaded as `loading.Opener.reranker` loads a cross-encoder."""
    return PairScorer(
        SPEC,
        open_session(graph, SessionConfig(threads=1)),
        load_tokenizer(tokenizer_path, WINDOW),
        load_tokenizer(tokenizer_path, WINDOW),
    )


def pieces(tokenizer_path: Path, text: str) -> list[int]:
    return Tokenizer.from_file(str(tokenizer_path)).encode(text, add_special_tokens=False).ids


def split_pair(ids: list[int]) -> tuple[list[int], list[int]]:
    """(query ids, doc ids) of `<s> q </s></s> d </s>`, asserting that format."""
    assert ids[0] == BOS and ids[-1] == EOS
    cut = ids.index(EOS)
    assert ids[cut : cut + 2] == [EOS, EOS], "</s></s> between query and document"
    assert BOS not in ids[1:] and EOS not in ids[1:cut] and EOS not in ids[cut + 2 : -1]
    return ids[1:cut], ids[cut + 2 : -1]


def test_pair_format_is_xlmr(scorer: PairScorer, tokenizer_path: Path) -> None:
    """Four specials, one token type (0) for both sides: what XLM-R was trained on."""
    q, d = "what colour are bananas", "bananas are yellow"
    (enc,) = scorer.tokenize(q, [Doc("a", d)]).encodings
    assert enc.ids == [BOS, *pieces(tokenizer_path, q), EOS, EOS, *pieces(tokenizer_path, d), EOS]
    assert set(enc.type_ids) == {0}


def test_long_query_and_long_docs_fill_the_window_with_the_whole_query(
    scorer: PairScorer, tokenizer_path: Path
) -> None:
    """A query within half the window stays whole; each document is cut to 512 - 4 - query."""
    query = words(200)
    q_ids = pieces(tokenizer_path, query)
    assert len(q_ids) == 200
    docs = [Doc(str(i), words(800, start=i)) for i in range(3)]
    tok = scorer.tokenize(query, docs)
    assert tok.lengths == [WINDOW] * 3
    for doc, enc in zip(docs, tok.encodings, strict=True):
        assert len(enc.ids) == WINDOW
        got_q, got_d = split_pair(enc.ids)
        assert got_q == q_ids
        assert got_d == pieces(tokenizer_path, doc.text)[: WINDOW - 4 - 200]


@pytest.mark.parametrize(("q_len", "kept"), [(256, 256), (257, 254), (400, 254)])
def test_query_over_half_the_window_is_cut_but_leaves_the_document_room(
    scorer: PairScorer, tokenizer_path: Path, q_len: int, kept: int
) -> None:
    """Up to 256 query tokens stay whole; beyond, the longer side is cut first, so query and a
    long document share the 508 non-special tokens (254 each); both keep their beginnings."""
    query, doc = words(q_len), words(900, start=3)
    (enc,) = scorer.tokenize(query, [Doc("d", doc)]).encodings
    assert len(enc.ids) == WINDOW
    got_q, got_d = split_pair(enc.ids)
    assert got_q == pieces(tokenizer_path, query)[:kept]
    assert got_d == pieces(tokenizer_path, doc)[: WINDOW - 4 - kept]


def test_short_pairs_are_untouched_beside_long_ones(
    scorer: PairScorer, tokenizer_path: Path
) -> None:
    query = words(300)  # longest_first: only pairs over the window are cut
    full = Tokenizer.from_file(str(tokenizer_path))
    docs = [Doc("short", "a short document"), Doc("long", words(700)), Doc("one", "x")]
    tok = scorer.tokenize(query, docs)
    for doc, enc in zip(docs, tok.encodings, strict=True):
        if doc.id != "long":
            assert enc.ids == full.encode(query, doc.text).ids
            assert len(enc.ids) == 300 + len(pieces(tokenizer_path, doc.text)) + 4
    assert tok.lengths[1] == WINDOW


def test_512_tokens_fit_the_514_position_rows_and_one_more_would_not(
    scorer: PairScorer, graph: Path
) -> None:
    """Positions run padding_idx + 1 .. padding_idx + n: 2..513 for a full pair, the table's
    last row. A 513-token row would read row 514, which does not exist; the engine's
    truncation is what keeps every pair inside."""
    assert roberta.tiny_shape().config.max_positions == PAD + WINDOW + 1
    reranker = CrossEncoderReranker(scorer)
    docs = [Doc("long", words(2000)), Doc("short", "apple"), Doc("mid", words(100))]
    ranking = reranker.rerank(words(300), docs, raw=True)
    assert ranking.tokens == WINDOW + (300 + 1 + 4) + (300 + 100 + 4)
    assert len(ranking.results) == 3 and all(np.isfinite(r.score) for r in ranking.results)
    session = open_session(graph, SessionConfig(threads=1))
    over = np.full((1, WINDOW + 1), 5, np.int64)
    with pytest.raises(Exception, match=r"position/Gather.*out of data bounds, idx=514"):
        session.run(["logits"], {"input_ids": over, "attention_mask": np.ones_like(over)})


@pytest.mark.parametrize("positions", ["mask", "input_ids"])
def test_padding_beside_a_full_pair_does_not_change_scores(
    graphs: dict[str, Path], tokenizer_path: Path, positions: str
) -> None:
    """Shorter pairs padded to 512 in one run score as they do alone, and as on the other
    graph: pads take no attention, and no position beyond the table's last row (counted from
    the ids, the engine's 0-padding gives them positions up to 1 + 512, still inside)."""
    reranker = CrossEncoderReranker(_scorer(graphs[positions], tokenizer_path))
    other = CrossEncoderReranker(_scorer(graphs["mask"], tokenizer_path))
    query = words(40)
    docs = [Doc("full", words(1000)), Doc("short", "river stone"), Doc("mid", words(90, 2))]
    ranking = reranker.rerank(query, docs, raw=True)
    assert ranking.tokens == WINDOW + (40 + 2 + 4) + (40 + 90 + 4)
    together = {r.id: r.score for r in ranking.results}
    for d in docs:
        alone = reranker.rerank(query, [d], raw=True).results[0].score
        assert alone == pytest.approx(together[d.id], abs=1e-4)
        assert alone == pytest.approx(other.rerank(query, [d], raw=True).results[0].score, abs=1e-5)
