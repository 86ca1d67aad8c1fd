"""The catalogs as data: the seed's ids and levels, aliases, honest starter ids, user files."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedder.catalog import BGE, STARTER, HubFile, PackageFile
from embedder.catalog_file import load_catalog
from embedder.errors import ConfigError, UnknownModel


def test_bge_levels_match_the_seed() -> None:
    table = {
        1: ("bge-small-q1", "int8", 384, 128),
        2: ("bge-small-q2", "fp32", 384, 256),
        3: ("bge-base-q3", "int8", 768, 256),
        4: ("bge-base-q4", "fp32", 768, 512),
    }
    for level, (mid, precision, dims, max_tokens) in table.items():
        spec = BGE.level(level)
        assert (spec.id, spec.precision, spec.dims, spec.max_tokens) == (
            mid,
            precision,
            dims,
            max_tokens,
        )
        assert spec.pooling == "cls"
    rr = BGE.get("bge-reranker-base")
    assert rr.kind == "rerank" and rr.scorer == "cross-encoder" and rr.max_tokens == 512


def test_openai_aliases() -> None:
    assert BGE.get("text-embedding-3-small").id == "bge-small-q2"
    assert BGE.get("text-embedding-3-large").id == "bge-base-q4"


def test_hub_files_are_pinned_to_commits() -> None:
    for spec in BGE:
        for f in spec.files:
            if isinstance(f.origin, HubFile):
                assert len(f.origin.revision) == 40
                int(f.origin.revision, 16)


def test_starter_is_honest_and_offline() -> None:
    for spec in STARTER:
        assert not spec.id.startswith("bge"), spec.id
        for dep in STARTER.closure(spec):
            assert not any(isinstance(f.origin, HubFile) for f in dep.files)
    precisions = {s.precision for s in STARTER.embedding_models()}
    assert {"fp32", "int8"} <= precisions
    rr = STARTER.default_reranker()
    assert "cosine" in rr.id and "cosine" in rr.description
    assert rr.scorer == "cosine"


def test_starter_package_files_name_their_dist() -> None:
    origins = [f.origin for s in STARTER for f in s.files if isinstance(f.origin, PackageFile)]
    assert origins and all(o.dist and o.path for o in origins)


def test_unknown_names() -> None:
    with pytest.raises(UnknownModel, match="bge-small-q2"):
        BGE.get("nope")
    with pytest.raises(UnknownModel):
        BGE.level(5)


def test_closure_lists_dependencies_first() -> None:
    ids = [s.id for s in BGE.closure(BGE.get("bge-small-q1"))]
    assert ids == ["bge-small-q2", "bge-small-q1"]


def test_user_catalog_file_extends_a_builtin(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        """
extends = "bge"
[aliases]
"e5" = "e5-small-v2"
[[models]]
id = "e5-small-v2"
repo = "intfloat/e5-small-v2"
revision = "ffb93f3bd4047442299a41ebb6fa998a38507c52"
pooling = "mean"
dims = 384
max_tokens = 512
level = 5
"""
    )
    cat = load_catalog(str(path))
    assert cat.get("e5").id == "e5-small-v2"
    assert cat.level(5).pooling == "mean"
    assert cat.get("bge-small-q2").level == 2
    spec = cat.get("e5-small-v2")
    assert {f.name for f in spec.files} == {"onnx/model.onnx", "tokenizer.json"}


def test_user_catalog_refuses_branch_revisions(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[models]]\nid = "x"\nrepo = "a/b"\nrevision = "main"\n')
    with pytest.raises(ConfigError, match="40-hex"):
        load_catalog(str(path))


def test_unknown_catalog_name() -> None:
    with pytest.raises(ConfigError, match="bge"):
        load_catalog("nonexistent")
