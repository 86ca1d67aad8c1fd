"""OpenVINO's compiled-model cache kept from growing: one folder per graph file version and
compute precision, and nothing in it, or beside it, that no start can import any more.

OpenVINO names a blob by a hash of the graph's path and the compile options it deems to
matter (the CPU among them), and checks the OpenVINO version and the file's size and mtime
in the blob's header: a blob that fails the check is compiled again and written anew. So a
new OpenVINO, a new CPU or another precision leaves a blob beside the old ones, which no one
reads again and OpenVINO never removes (tens to hundreds of MiB each). Here:

- each opened (file version, precision) compiles into its own folder, named by the file's
  path, size and mtime and the precision, with a record of them (`source.json`);
- a compile that wrote a blob (the config or the version changed) leaves the folder's other
  blobs stale: they go (`tidy`);
- a folder whose file version is gone from disk, or that no start has opened for
  `UNUSED_DAYS` (a precision no longer asked for), goes too (`prune`), as do the blobs of the
  flat layout of earlier versions, once no process uses it.

Workers of one models root share the folders: each holds a shared `flock` on a folder's lock
file (beside it) for as long as it lives, from before it creates the folder, so a folder in use
is never removed; the pruner takes the lock exclusively without waiting, or leaves the folder
for a later start. A blob removed while another process maps it stays readable to that
process (Linux keeps the inode); one that vanishes while a process opens it makes OpenVINO
compile instead, and a compile that fails with the cache is tried without it
(`embedder.backends.openvino`), so no race fails a start.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from embedder.backends.cache import digest, file_key

log = logging.getLogger("embedder.backends.compiled_cache")

RECORD = "source.json"  # in each folder: the file version and precision it holds blobs of
LOCK_SUFFIX = ".lock"  # a folder's lock file, beside it
BLOB_SUFFIX = ".blob"  # what OpenVINO writes into CACHE_DIR
UNUSED_DAYS = 30  # a folder no start opened for this long holds a precision no longer asked for
LOCK_WAIT = 5.0  # seconds an opener waits for a pruner removing the same folder (milliseconds)

_held: dict[Path, int] = {}  # folder -> the descriptor of its shared lock, for the process's life
_held_lock = threading.Lock()


def folder_name(graph: Path, precision: str) -> str:
    """The folder of `graph` (as it is now on disk) compiled in `precision`: readable, and
    unique to the file's path, size and mtime."""
    key = {"path": str(graph.resolve()), "file": file_key(graph), "precision": precision}
    return f"{graph.parent.name}.{graph.stem}.{precision}.{digest(key)}"


def _lock_path(folder: Path) -> Path:
    return folder.with_name(folder.name + LOCK_SUFFIX)


def _flock(path: Path, mode: int) -> int | None:
    """A descriptor of the lock file at `path` (created if need be) locked in `mode` without
    waiting, or None when another process holds it. Its inode is checked to still be the one
    at `path` (a pruner may have removed it between our open and our lock)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino == os.stat(path).st_ino:
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def use(cache: Path, graph: Path, precision: str) -> Path | None:
    """The folder `graph` compiles into in `precision`, locked shared for this process's life
    and stamped as used now; None (compile without a cache) when it cannot be had: a root
    that cannot be written, or a pruner that holds it past `LOCK_WAIT`."""
    try:
        folder = cache / folder_name(graph, precision)
        with _held_lock:
            if folder not in _held:
                fd = _acquire_shared(_lock_path(folder))
                if fd is None:
                    log.warning("no compiled-model cache for %s: %s is busy", graph, folder)
                    return None
                _held[folder] = fd
        folder.mkdir(exist_ok=True)
        record = folder / RECORD
        if not record.is_file():
            doc = {"graph": str(graph.resolve()), "file": file_key(graph), "precision": precision}
            tmp = folder / f".{RECORD}.{uuid.uuid4().hex[:8]}.tmp"
            tmp.write_text(json.dumps(doc, indent=1))
            os.replace(tmp, record)
        os.utime(record)  # used now: see `UNUSED_DAYS`
        return folder
    except OSError as exc:
        log.warning("no compiled-model cache for %s: %s", graph, exc)
        return None


def _acquire_shared(path: Path) -> int | None:
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        fd = _flock(path, fcntl.LOCK_SH)
        if fd is not None or time.monotonic() > deadline:
            return fd
        time.sleep(0.01)  # a pruner removes a folder in milliseconds


Blobs = dict[str, tuple[int, int, int]]  # blob name -> inode, size, mtime


def blobs(folder: Path | None) -> Blobs:
    """The blobs in `folder` as they are now (to tell after a compile which it wrote)."""
    found: Blobs = {}
    if folder is None:
        return found
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.name.endswith(BLOB_SUFFIX) and entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                found[entry.name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found


def tidy(folder: Path, before: Blobs) -> list[str]:
    """After a compile into `folder`: if it wrote a blob, OpenVINO's config or version for this
    file and precision changed, and the folder's other blobs will never be imported again.
    Returns the names removed."""
    after = blobs(folder)
    written = {name for name, stat in after.items() if before.get(name) != stat}
    if not written:
        return []  # imported: nothing changed
    stale = sorted(set(after) - written)
    for name in stale:
        with contextlib.suppress(OSError):
            (folder / name).unlink()
    if stale:
        log.info("removed %d stale compiled model(s) from %s", len(stale), folder)
    return stale


def prune(cache: Path, now: float | None = None) -> list[str]:
    """Remove what no start can use any more: folders of file versions gone from disk, folders
    no start opened for `UNUSED_DAYS`, the flat blobs of earlier versions, lock files left
    alone; never a folder a live process holds. Returns the names removed."""
    now = time.time() if now is None else now
    removed: list[str] = []
    try:
        entries = list(os.scandir(cache))
    except OSError:
        return removed
    names = {e.name for e in entries}
    for entry in entries:
        path = Path(entry.path)
        try:
            if entry.name.endswith(BLOB_SUFFIX) and entry.is_file(follow_symlinks=False):
                path.unlink()  # the flat layout's: no one looks there any more
                removed.append(entry.name)
            elif entry.is_dir(follow_symlinks=False):
                if path not in _held and _stale(path, now) and _remove(path):
                    removed.append(entry.name)
            elif entry.name.endswith(LOCK_SUFFIX):
                folder = entry.name.removesuffix(LOCK_SUFFIX)
                if folder not in names and _remove(path.with_name(folder)):
                    removed.append(entry.name)
        except OSError as exc:
            log.warning("cannot tidy %s: %s", path, exc)
    if removed:
        log.info("removed from %s what no start uses any more: %s", cache, ", ".join(removed))
    return removed


def _stale(folder: Path, now: float) -> bool:
    """Whether `folder` holds blobs of a file version no longer on disk, or was not opened for
    `UNUSED_DAYS` (a folder without its record is one an opener never finished)."""
    record = folder / RECORD
    try:
        doc: Any = json.loads(record.read_text())
        graph = Path(doc["graph"])
        if not graph.is_file() or file_key(graph) != doc["file"]:
            return True
        return now - record.stat().st_mtime > UNUSED_DAYS * 86400
    except (OSError, ValueError, KeyError, TypeError):
        return True


def _remove(folder: Path) -> bool:
    """Remove `folder` and its lock file if no process holds its lock (else leave both)."""
    lock = _lock_path(folder)
    fd = _flock(lock, fcntl.LOCK_EX)
    if fd is None:
        return False
    try:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()  # an opener holding the old inode sees it and opens a new one
        if folder.exists():
            raise OSError(errno.ENOTEMPTY, "could not remove all of it", str(folder))
        return True
    finally:
        os.close(fd)
