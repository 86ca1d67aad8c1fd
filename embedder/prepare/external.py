"""A copy of a graph with its weights in a separate file, for weights shared between sessions.

ONNX Runtime maps external-data weights from the file instead of copying them into each
session, so with prepacking off (`session.disable_prepacking`) every session of the model,
in one worker or in several, reads the same page-cache pages: the memory of one copy. That
costs speed (MatMul without its prepacked layout), so it is a setting
(EMBEDDER_SHARED_WEIGHTS) for large models on small memory; docs/memory.md has the numbers.
"""

from __future__ import annotations

import os
from pathlib import Path

import filelock
import onnx

from embedder.errors import ModelUnavailable

SUFFIX = ".shared.onnx"


def external_copy(src: Path, cache_dir: Path) -> Path:
    """`cache_dir/<stem>.shared.onnx` and its data file, made once per version of `src`.

    The data file's name carries the source's mtime, so a remade copy never rewrites a file
    another worker has mapped (an unlinked mapped file stays valid)."""
    dst = cache_dir / (src.stem + SUFFIX)
    try:
        version = src.stat().st_mtime_ns
        data_name = f"{dst.name}.{version}.data"
        if dst.is_file() and (cache_dir / data_name).is_file():
            return dst
        cache_dir.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(cache_dir / f".{dst.name}.lock"):
            if dst.is_file() and (cache_dir / data_name).is_file():
                return dst  # another worker made it meanwhile
            model = onnx.load(str(src))
            tmp = cache_dir / f".{dst.name}.{os.getpid()}.tmp"
            # Large tensors go to the data file, small ones (shapes, scalars) stay inline.
            onnx.save_model(
                model,
                str(tmp),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=4096,
                convert_attribute=False,
            )
            os.replace(tmp, dst)
            for old in cache_dir.glob(f"{dst.name}.*.data"):
                if old.name != data_name:
                    old.unlink(missing_ok=True)
    except OSError as exc:
        msg = f"cannot write the shared-weights copy of {src.name}: {exc}"
        raise ModelUnavailable(msg) from exc
    return dst
