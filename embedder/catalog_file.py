"""User catalogs: a TOML file that adds Hub models to a built-in catalog (or stands alone).

extends = "bge"                      # optional: start from a built-in catalog
[aliases]
"my-small" = "e5-small-v2"
[[models]]
id = "e5-small-v2"
kind = "embedding"                   # or "rerank" (a cross-encoder)
repo = "intfloat/e5-small-v2"
revision = "<40-hex commit>"         # pinned: a branch name is refused
onnx = "onnx/model.onnx"
tokenizer = "tokenizer.json"
files = ["config.json"]              # extra files to fetch; onnx and tokenizer always are
sha256 = { "onnx/model.onnx" = "<hex>" }   # optional, verified after download
pooling = "mean"                     # cls | mean (embedding)
dims = 384
max_tokens = 512
precision = "fp32"                   # fp32 | int8
level = 5                            # optional quality level
query_instruction = "query: "        # optional
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from embedder.catalog import BUILTIN, Catalog, HubFile, ModelFile, ModelSpec
from embedder.errors import ConfigError

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def load_catalog(name: str) -> Catalog:
    """A built-in catalog by name, or a TOML catalog file by path."""
    if name in BUILTIN:
        return BUILTIN[name]
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"unknown catalog {name!r}: use one of {sorted(BUILTIN)} or a path to a .toml file"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read catalog {path}: {exc}") from exc
    return parse_catalog(data, default_name=path.stem)


def parse_catalog(data: dict[str, Any], *, default_name: str) -> Catalog:
    base_name = data.get("extends")
    base = None
    if base_name is not None:
        if base_name not in BUILTIN:
            raise ConfigError(f"extends={base_name!r}: not a built-in catalog")
        base = BUILTIN[base_name]
    models = [_model(m) for m in data.get("models", [])]
    aliases = {str(k): str(v) for k, v in dict(data.get("aliases", {})).items()}
    if base is not None:
        models = [*base.models, *models]
        aliases = {**base.aliases, **aliases}
    return Catalog(name=str(data.get("name", default_name)), models=tuple(models), aliases=aliases)


def _model(m: dict[str, Any]) -> ModelSpec:
    def need(key: str) -> Any:
        if key not in m:
            raise ConfigError(f"catalog model {m.get('id', '?')!r} lacks {key!r}")
        return m[key]

    model_id, repo, revision = str(need("id")), str(need("repo")), str(need("revision"))
    if not _COMMIT.match(revision):
        raise ConfigError(f"{model_id}: revision must be a 40-hex commit, got {revision!r}")
    kind = m.get("kind", "embedding")
    if kind not in ("embedding", "rerank"):
        raise ConfigError(f"{model_id}: kind must be embedding or rerank")
    onnx, tokenizer = (
        str(m.get("onnx", "onnx/model.onnx")),
        str(m.get("tokenizer", "tokenizer.json")),
    )
    sha = {str(k): str(v) for k, v in dict(m.get("sha256", {})).items()}
    names = list(dict.fromkeys([onnx, tokenizer, *map(str, m.get("files", []))]))
    files = tuple(ModelFile(n, HubFile(repo, revision, n, sha.get(n))) for n in names)
    pooling = m.get("pooling", "cls" if kind == "embedding" else None)
    if pooling not in ("cls", "mean", None):
        raise ConfigError(f"{model_id}: pooling must be cls or mean")
    precision = m.get("precision", "fp32")
    if precision not in ("fp32", "int8"):
        raise ConfigError(f"{model_id}: precision must be fp32 or int8")
    return ModelSpec(
        id=model_id,
        kind=kind,
        description=str(m.get("description", f"{repo} (user catalog)")),
        source=f"{repo}@{revision[:7]}",
        files=files,
        onnx=onnx,
        tokenizer=tokenizer,
        pooling=pooling,
        dims=int(m["dims"]) if "dims" in m else None,
        max_tokens=int(m.get("max_tokens", 512)),
        precision=precision,
        level=int(m["level"]) if "level" in m else None,
        output=m.get("output"),
        scorer="cross-encoder" if kind == "rerank" else None,
        query_instruction=m.get("query_instruction"),
    )
