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
from pathlib import Path
from typing import Any

import filelock

from embedder.backends.cache import file_key
from embedder.prepare.weights_int8 import RECIPE, quantize_weights_int8

__all__ = ["INT8_WEIGHTS", "RECIPE", "FormUnavailable", "int8_weights"]
from embedder.store import integrity

log = logging.getLogger("embedder.backends.forms")

INT8_WEIGHTS = "openvino_int8.onnx"  # in the INT8 level's directory


class FormUnavailable(Exception):
    """The form cannot be built here (a read-only root, a graph the recipe cannot read)."""


def _made(source: Path) -> str:
    return f"built by the recipe {RECIPE} from {file_key(source)}"


def _current(path: Path, source: Path, digests: integrity.Digests) -> bool:
    """Whether the file at `path` is the form of `source` by this recipe, intact."""
    try:
        doc: Any = json.loads(integrity.record_path(path).read_text())
        if not isinstance(doc, dict) or doc.get("made") != _made(source):
            return False
        want = integrity.read_record(path, "the record of its build")
        return want is not None and digests.problem(path, want) is None
    except (OSError, ValueError):
        return False


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
