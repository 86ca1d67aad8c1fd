"""The quality levels one benchmark run measures, each prepared in the models root first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embedder.catalog import BGE, SHAPES, STARTER, Catalog, ModelSpec
from embedder.errors import EmbedderError
from embedder.store.files import ModelStore
from embedder.tools.bench.plan import Options
from embedder.tools.bench.scenarios import Clock


@dataclass(frozen=True)
class Level:
    catalog: Catalog
    spec: ModelSpec
    store: ModelStore

    @property
    def key(self) -> str:
        return f"{self.catalog.name}:{self.spec.level}"

    def describe(self) -> dict[str, Any]:
        s = self.spec
        return {"key": self.key, "catalog": self.catalog.name, "level": s.level, "model": s.id} | {
            "precision": s.precision,
            "max_tokens": s.max_tokens,
            "description": s.description,
        }


def prepare(opts: Options, clock: Clock) -> tuple[list[Level], list[str]]:
    """Starter levels (built once in the models root) and BGE levels already on disk; or the
    shapes catalog's levels and its reranker (built once: GB-sized, minutes the first time)."""
    levels: list[Level] = []
    skipped: list[str] = []
    if opts.catalog == "shapes":
        store = ModelStore(opts.models_root, SHAPES, offline=True)
        specs = [SHAPES.levels()[n] for n in opts.levels if n in SHAPES.levels()]
        for stand_in in [*specs, SHAPES.default_reranker()]:
            clock.say(f"preparing {stand_in.id} in {opts.models_root} (RANDOM WEIGHTS stand-in)")
            store.ensure(stand_in)
            levels.append(Level(SHAPES, stand_in, store))
        return levels, skipped
    starter = ModelStore(opts.models_root, STARTER, offline=True)
    for n in opts.levels:
        spec = STARTER.levels().get(n)
        if spec is None:
            skipped.append(f"starter level {n}: no such level")
            continue
        clock.say(f"preparing starter level {n} ({spec.id}) in {opts.models_root}")
        starter.ensure(spec)
        levels.append(Level(STARTER, spec, starter))
    if opts.bge:
        bge = ModelStore(opts.models_root, BGE, offline=True)
        for n in opts.levels:
            spec = BGE.levels().get(n)
            if spec is None:
                continue
            if missing := bge.missing(spec):  # never downloaded nor built here
                skipped.append(f"bge level {n} ({spec.id}): not in the models root ({missing[0]})")
                continue
            if stale := bge.stale(spec):  # e.g. an older INT8 recipe's file: measure a current one
                clock.say(f"rebuilding bge level {n} ({spec.id}): {stale[0]}")
                try:
                    bge.ensure(spec)
                except EmbedderError as e:
                    skipped.append(f"bge level {n} ({spec.id}): {e.message}")
                    continue
                if stale := bge.stale(spec):
                    skipped.append(f"bge level {n} ({spec.id}): could not build again {stale[0]}")
                    continue
            levels.append(Level(BGE, spec, bge))
    return levels, skipped
