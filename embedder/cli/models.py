"""`embedder models ...` and the tables and progress bars the commands print."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from embedder.errors import EmbedderError
from embedder.settings import Settings

if TYPE_CHECKING:
    from embedder.backends.forms import FormState
    from embedder.catalog import Catalog, ModelSpec
    from embedder.store.files import ModelStore

OK, FAILURE = 0, 1


def models_list(settings: Settings, catalog: Catalog, store: ModelStore, *, as_json: bool) -> int:
    """Every model of the catalog and its files: present only when every file is there and is
    what it should be (`ModelStore.unusable`); what is wrong with a file is said below."""
    rows = []
    for spec in catalog:
        missing, stale, unusable = store.missing(spec), store.stale(spec), store.unusable(spec)
        disk = store.disk_size(spec)
        row = {**spec.describe(), "present": not missing and not unusable, "missing": missing}
        rows.append(row | {"stale": stale, "unusable": unusable, "disk": disk})
    if as_json:
        doc = {"catalog": catalog.name, "models_root": str(settings.models_root), "models": rows}
        print(json.dumps({**doc, "aliases": dict(catalog.aliases)}, indent=2))
        return OK
    notes = []
    for r in rows:
        files = ["present"] if r["present"] else []
        files += [f"missing {len(r['missing'])}"] if r["missing"] else []
        files += [f"{len(r['unusable'])} unusable"] if r["unusable"] else []
        files += [f"{len(r['stale'])} to rebuild"] if r["stale"] else []
        r.update(files=", ".join(files), size=human_size(r["disk"]))
        notes += [f"{r['id']}: {why}" for why in dict.fromkeys(r["unusable"] + r["stale"])]
    print(
        text_table(
            ("id", "level", "kind", "precision", "dims", "max_tokens", "files", "size"), rows
        )
    )
    if notes:
        print("\n" + "\n".join(notes))
    aliases = ", ".join(f"{a} -> {t}" for a, t in catalog.aliases.items())
    print(f"\ncatalog {catalog.name}; models root {settings.models_root}\naliases: {aliases}")
    return OK


def models_pull(store: ModelStore, specs: list[ModelSpec]) -> int:
    failed = []
    for spec in specs:
        if not store.missing(spec) and not store.stale(spec) and not store.unusable(spec):
            print(f"ok    {spec.id}: already present", file=sys.stderr)
            continue
        bar = _Bars(store, spec, sys.stderr)
        try:
            store.ensure(spec)
        except EmbedderError as e:
            failed.append(spec.id)
            bar.finish()
            print(f"FAIL  {spec.id}: {e.message}", file=sys.stderr)
            continue
        bar.finish()
        if stale := store.stale(spec):  # its rebuild failed (the log says why); the old serves
            failed.append(spec.id)
            print(f"FAIL  {spec.id}: could not build again {'; '.join(stale)}", file=sys.stderr)
            continue
        print(f"ok    {spec.id}: {human_size(store.disk_size(spec))}", file=sys.stderr)
    return FAILURE if failed else OK


def models_verify(store: ModelStore, specs: list[ModelSpec]) -> int:
    """Files first (read only: verify never downloads or builds), then a real load and one run,
    whose output must be finite and, for embeddings, of unit length. A form a backend built
    beside a model's files (OpenVINO's int8-weights form) is checked too, and said to be
    current, or stale or damaged and built again at the next load that wants it (its model
    serves meanwhile: not a failure)."""
    from embedder.reranker import Doc
    from embedder.service import Service
    from embedder.store.files import ModelStore as Store

    store = Store(store.root, store.catalog, offline=True, hf_cache=store.hf_cache, read_only=True)
    failed: list[ModelSpec] = []
    sound: list[ModelSpec] = []
    built: dict[str, str] = {}  # model id -> what the ok line says of its built forms
    for spec in specs:
        problems = store.verify(spec)
        for p in problems:
            print(f"FAIL  {spec.id}: {p}")
        (failed if problems else sound).append(spec)
        if (form := _built_form(store, spec)) is not None and form.state == "ok":
            built[spec.id] = f"; {form.name} current"
        elif form is not None:
            print(f"note  {spec.id}: {form.name}: {form.state} ({form.why}): {REBUILT}")
    service = Service(store.catalog, store, models=[s.id for s in sound])
    if sound:  # an empty list would mean the whole catalog
        service.load_all()
    for spec in sound:
        try:
            if (error := (st := service.status_by_id[spec.id]).error) is not None:
                raise EmbedderError(error if st.broken else f"does not load: {error}")
            if spec.kind == "embedding":
                got = service.embed(["verify this model"], spec)
                norm = float((got.vectors[0] ** 2).sum() ** 0.5)
                # written so that a NaN norm fails it too (every comparison with NaN is false)
                if not abs(norm - 1) <= 1e-3 or (spec.dims and got.vectors.shape[1] != spec.dims):
                    raise EmbedderError(f"odd output: shape {got.vectors.shape}, norm {norm}")
                what = f"{got.vectors.shape[1]} dims"
            else:
                docs = [Doc("a", "a matching text"), Doc("b", "something else")]
                _, ranking = service.rerank("a matching text", docs, model=spec.id)
                scores = [r.score for r in ranking.results]
                if not all(math.isfinite(s) for s in scores):
                    raise EmbedderError(f"odd output: scores {scores}")
                what = f"scores {[round(s, 3) for s in scores]}"
        except EmbedderError as e:
            failed.append(spec)
            print(f"FAIL  {spec.id}: {e.message}")
            continue
        secs = service.status_by_id[spec.id].load_seconds
        size = human_size(store.disk_size(spec))
        print(f"ok    {spec.id}: {size}, loads in {secs}s, {what}{built.get(spec.id, '')}")
    return FAILURE if failed else OK


REBUILT = "will be rebuilt on next load"


def _built_form(store: ModelStore, spec: ModelSpec) -> FormState | None:
    """OpenVINO's int8-weights form of an INT8 level, where one was built (on CPUs where
    OpenVINO runs it), held to its build record and its FP32 source."""
    from embedder.backends import forms

    if spec.precision != "int8":
        return None
    path = store.root / spec.id / forms.INT8_WEIGHTS
    return forms.check(path, forms.fp32_source(store, spec), store.digests)


def quantize(src: Path, out: Path) -> int:
    from embedder.prepare import RECIPES

    if not src.is_file():
        print(f"embedder: {src} is not a file", file=sys.stderr)
        return FAILURE
    started, tmp = time.monotonic(), out.with_name(f".{out.stem}.partial{out.suffix}")
    try:  # to a temporary name first: OUT is either the whole graph or untouched
        RECIPES["quantize-int8"]([src], tmp)
        os.replace(tmp, out)
    except Exception as e:  # the quantizer's own errors: report them, do not trace back
        print(f"embedder: quantizing {src} failed: {e!r}", file=sys.stderr)
        return FAILURE
    finally:
        tmp.unlink(missing_ok=True)
    took = time.monotonic() - started
    sizes = f"{human_size(out.stat().st_size)} (from {human_size(src.stat().st_size)})"
    print(f"{out}: {sizes} in {took:.1f}s")
    return OK


class _Bars:
    """Per-file progress of one `ensure`, polled from the store's progress file: redrawn in
    place on a terminal, one line per state change otherwise (logs, CI)."""

    def __init__(self, store: ModelStore, spec: ModelSpec, out: IO[str]) -> None:
        self.store, self.spec, self.out = store, spec, out
        self.tty, self.drawn = out.isatty(), 0
        self.seen: dict[str, str] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, name="progress", daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stop.wait(0.2):
            self.draw()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()
        self.draw()

    def draw(self) -> None:
        files = self.store.progress(self.spec)["files"]
        lines = []
        for f in files:
            label, state = f"{f['model']}/{f['name']}", str(f["state"])
            done, total = int(f.get("bytes_done") or 0), int(f.get("bytes_total") or 0)
            frac = done / total if total else (1.0 if state == "done" else 0.0)
            bar = "#" * int(frac * 24)
            lines.append(f"{label:48.48} [{bar:24}] {frac:4.0%} {human_size(done):>10} {state}")
            if not self.tty and self.seen.get(label) != state:
                self.seen[label] = state
                print(lines[-1], file=self.out)
        if self.tty:
            up = f"\x1b[{self.drawn}F" if self.drawn else ""
            self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self.drawn = len(lines)
        self.out.flush()


def text_table(keys: Sequence[str], rows: Sequence[Mapping[str, object]]) -> str:
    """Aligned columns headed by the upper-cased keys; None shows as '-'."""
    head = [k.upper().replace("_", " ") for k in keys]
    cells = [head, *[["-" if r.get(k) is None else str(r.get(k)) for k in keys] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(keys))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def human_size(n: int | None) -> str:
    size = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
