"""Whether a file of the store still holds the bytes it should: the size and sha256 it must
have, and where that expectation comes from.

A downloaded file must match the catalog's pinned sha256, else the one its download was
verified against; a file that a package ships, the hash pip recorded when it installed it; a
file the service builds, the size and sha256 recorded when it built it. That record is a
small JSON file beside it (`.<name>.record.json`), written once the file is in place, so a
built file without one was made by an earlier version (or its build was cut short).

The check hashes the whole file: a size and mtime check would pass a file whose bytes were
overwritten in place or rotted on disk, which is the damage that matters here (a weight turned
to NaN loads fine and answers garbage). It runs when a model is made ready, right before the
file is read whole to open its session, so its reading only warms the page cache for that;
each version of a file (device, inode, size, mtime, ctime) is hashed once per process.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedder.catalog import BuiltFile, HubFile, Origin, PackageFile
from embedder.store.progress import recorded

RECORD_SUFFIX = ".record.json"


@dataclass(frozen=True)
class Expected:
    """What a file must be: its sha256, its size when known, and who says so (for messages)."""

    sha256: str
    size: int | None
    source: str


def record_path(path: Path) -> Path:
    """Where the record of the file at `path` lives."""
    return path.with_name(f".{path.name}{RECORD_SUFFIX}")


def write_record(path: Path, size: int, sha256: str, made: str) -> None:
    """Record what the file at `path` is now (written atomically, after the file itself)."""
    doc = {"name": path.name, "size": size, "sha256": sha256, "made": made}
    final = record_path(path)
    tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def read_record(path: Path, source: str) -> Expected | None:
    """The record of the file at `path`; None if there is none or it cannot be read."""
    try:
        doc: Any = json.loads(record_path(path).read_text())
        sha, size = doc["sha256"], doc["size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(sha, str) or not isinstance(size, int) or isinstance(size, bool):
        return None
    return Expected(sha, size, source)


def remove(path: Path) -> None:
    """The file and its record."""
    path.unlink(missing_ok=True)
    record_path(path).unlink(missing_ok=True)


def expected(origin: Origin, path: Path, model_dir: Path) -> Expected | None:
    """What the file of `origin` at `path` must be: a Hub file's pinned sha256 (else the one its
    download was checked against), a package file's as pip recorded it, a built file's as its
    build recorded it. None when nothing says."""
    if isinstance(origin, PackageFile):
        return installed(origin.dist, origin.path)
    if isinstance(origin, BuiltFile):
        return read_record(path, "the record of its build")
    if not isinstance(origin, HubFile):
        return None
    record = read_record(path, "the record of its download")
    if origin.sha256:
        return Expected(origin.sha256, record.size if record else None, "the catalog")
    if record is None:  # downloaded by an earlier version: its progress file kept the sha256
        name = path.relative_to(model_dir).as_posix()
        if sha := recorded(model_dir).get(name, {}).get("sha256"):
            return Expected(sha, None, "the record of its download")
    return record


def installed(dist: str, path: str) -> Expected | None:
    """What pip recorded of `path` (relative to site-packages) when it installed `dist`; None
    when it recorded no sha256 for it (or the package is not installed)."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f) == path and f.hash is not None and f.hash.mode == "sha256":
            digest = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
            return Expected(digest.hex(), f.size, f"pip's record of {dist}")
    return None


def sha256(path: Path) -> str:
    """The file's sha256 (read in 1 MiB blocks into one buffer)."""
    h, buf = hashlib.sha256(), bytearray(1 << 20)
    view = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


class Digests:
    """sha256 of files, each version of a file hashed once in this process.

    A version is the file's (device, inode, size, mtime, ctime): any write through the file
    system changes its ctime, which no program can set back, so a file changed since its last
    hashing is hashed again. Bytes that rot on the disk keep all five; the next process sees
    them."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, int, int, int, int], str] = {}

    @staticmethod
    def _version(st: os.stat_result) -> tuple[int, int, int, int, int]:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def of(self, path: Path) -> str:
        version = self._version(path.stat())
        if (known := self._known.get(version)) is None:
            known = sha256(path)
            if self._version(path.stat()) == version:  # not changed while it was read
                self._known[version] = known
        return known

    def remember(self, path: Path, sha: str) -> None:
        """`sha` of the file now at `path`, as its writer computed it."""
        with contextlib.suppress(OSError):
            self._known[self._version(path.stat())] = sha

    def problem(self, path: Path, want: Expected) -> str | None:
        """What is wrong with the file at `path` when it must be `want`; None if nothing."""
        size = path.stat().st_size
        if want.size is not None and size != want.size:
            return (
                f"it is {size} bytes where {want.source} says {want.size}: truncated or overwritten"
            )
        if (got := self.of(path)) != want.sha256:  # a prefix says which: the lines stay short
            said = f"{want.source} says {want.sha256[:16]}…"
            return f"sha256 {got[:16]}… where {said}: it changed on disk"
        return None
