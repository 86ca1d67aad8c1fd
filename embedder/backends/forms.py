"""Graph forms a backend needs beyond the catalog's files, built on demand into the model's
directory: today the int8-weights form of an INT8 level (`embedder.prepare.weights_int8`),
which only OpenVINO on a CPU with integer dot-product units runs faster than the level's
own file. Built only where it is a candidate, so other machines never spend the disk or the
time.

Like the store's built files: made under a file lock (siblings starting together build it
once), written to a temporary name and renamed, with a build record beside it. The record
also names the FP32 file it was made from and the recipe's version: a changed source or a
newer recipe builds it again, and a file whose bytes no longer match its record (damaged on
disk) is rebuilt rather than served.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import filelock

from embedder.backends.cache import file_key
from embedder.catalog import BuiltFile, ModelSpec, SharedFile
from embedder.prepare.weights_int8 import RECIPE, quantize_weights_int8

__all__ = ["INT8_WEIGHTS", "RECIPE", "FormState", "FormUnavailable", "check", "int8_weights"]
from embedder.store import integrity

if TYPE_CHECKING:
    from embedder.store.files import ModelStore

log = logging.getLogger("embedder.backends.forms")

INT8_WEIGHTS = "openvino_int8.onnx"  # in the INT8 level's directory


class FormUnavailable(Exception):
    """The form cannot be built here (a read-only root, a graph the recipe cannot read)."""


def _made(source: Path) -> str:
    return f"built by the recipe {RECIPE} from {file_key(source)}"


@dataclass(frozen=True)
class FormState:
    """What a built form on disk is: `ok` (what a load would use), `stale` (its source or the
    recipe changed) or `damaged` (its bytes or its record are not what its build wrote);
    the last two are built again on the next load that wants the form."""

    name: str
    state: str  # ok | stale | damaged
    why: str


def check(path: Path, source: Path | None, digests: integrity.Digests) -> FormState | None:
    """The form at `path` held to its build record and to `source` (the FP32 file it must be
    made from; None when that is not on disk); None when no form was built there."""
    if not path.is_file():
        return None
    try:
        doc: Any = json.loads(integrity.record_path(path).read_text())
        made = doc.get("made") if isinstance(doc, dict) else None
    except (OSError, ValueError):
        made = None
    want = integrity.read_record(path, "the record of its build")
    if want is None or not isinstance(made, str):
        return FormState(path.name, "damaged", "its build record is missing or unreadable")
    if source is None or not source.is_file():
        return FormState(path.name, "stale", f"{made}, and that FP32 file is gone")
    if made != _made(source):
        return FormState(path.name, "stale", f"{made}; it would now be {_made(source)}")
    try:
        problem = digests.problem(path, want)
    except OSError as exc:
        problem = str(exc)
    if problem is not None:
        return FormState(path.name, "damaged", problem)
    return FormState(path.name, "ok", made)


def _current(path: Path, source: Path, digests: integrity.Digests) -> bool:
    """Whether the file at `path` is the form of `source` by this recipe, intact."""
    state = check(path, source, digests)
    return state is not None and state.state == "ok"


def fp32_source(store: ModelStore, spec: ModelSpec) -> Path | None:
    """The FP32 file an INT8 level is built from (its recipe's input, the int8-weights
    form's source), when it is there."""
    if spec.onnx is None or spec.precision != "int8":
        return None
    origin = spec.file(spec.onnx).origin
    if not isinstance(origin, BuiltFile) or len(origin.inputs) != 1:
        return None
    source: SharedFile = origin.inputs[0]
    try:
        path = store.path(store.catalog.get(source.model), source.name)
    except Exception:  # not in this catalog, or its package went away: no such source
        return None
    return path if path.is_file() else None


_TMP = ".tmp"  # a build's temporary file: .<stem>.<8 hex>.tmp<suffix>


def _remove_leftovers(final: Path) -> None:
    """The temporary files of builds killed half-way (a worker stopped mid-build): with the
    build's lock held, no live build writes one."""
    for old in final.parent.glob(f".{final.stem}.*{_TMP}{final.suffix}"):
        with contextlib.suppress(OSError):
            old.unlink()
            log.info("removed %s, left by a build that did not finish", old)


def int8_weights(
    model_dir: Path, source: Path, locks: Path, digests: integrity.Digests | None = None
) -> Path:
    """The int8-weights form of the FP32 graph `source` in `model_dir`, built if it is not
    there or not current. Raises `FormUnavailable` when it cannot be built."""
    digests = digests or integrity.Digests()
    final = model_dir / INT8_WEIGHTS
    if _current(final, source, digests):
        return final
    try:
        locks.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(locks / f"{model_dir.name}.{INT8_WEIGHTS}.lock")
        lock.acquire(timeout=600)  # a sibling building it: a large model takes a minute
    except (OSError, filelock.Timeout) as exc:
        raise FormUnavailable(f"cannot lock {final.name}: {exc}") from exc
    try:
        if _current(final, source, digests):  # a sibling built it while we waited
            return final
        tmp = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}{_TMP}{final.suffix}")
        try:
            _remove_leftovers(final)
            integrity.remove(final)
            count = quantize_weights_int8(source, tmp)
            size, sha = tmp.stat().st_size, integrity.sha256(tmp)
            os.replace(tmp, final)
            integrity.write_record(final, size, sha, _made(source))
        except Exception as exc:  # a full disk, a read-only root, a graph it cannot read
            raise FormUnavailable(f"cannot build {final.name}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        digests.remember(final, sha)
        log.info("built %s (%d int8 weights) from %s", final, count, source.name)
        return final
    finally:
        lock.release()
