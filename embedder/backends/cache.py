"""Each model's backend choice, kept in its directory under the models root (`.backend.json`),
keyed by what the measurement depended on: the CPU model and its vector extensions, the
files, the runtimes' versions and the worker's layout. A restart (or a sibling worker) finds
the choice and opens the chosen runtime without measuring again; a new file, CPU or version
measures anew.

The file is written whole and renamed into place, so a reader never sees half of it; one
worker per model measures at a time (`lock`), so siblings starting together do not time
each other's load and the others read its choice. A root that cannot be written only costs
the next start a measurement.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import filelock

from embedder.backends.cpu import cpu, read_cpu

log = logging.getLogger("embedder.backends.cache")

CHOICE_FILE = ".backend.json"
KEEP = 8  # entries per model (CPUs, files, layouts) before the oldest goes


def file_key(path: Path) -> str:
    """What identifies a graph file here: its name, size and modification time. Cheap (no
    read of a file of hundreds of MB at each start); a recorded hash of built files can take
    its place in this one function."""
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def cpu_key(cpuinfo: Path | None = None) -> str:
    """The CPU model and the vector extensions the runtimes' kernels pick from (`cpu.Cpu.key`;
    this machine's, read once, unless `cpuinfo` names another file)."""
    return (cpu() if cpuinfo is None else read_cpu(cpuinfo)).key


def digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


class ChoiceCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, model: str) -> Path:
        return self.root / model / CHOICE_FILE

    def lock(self, model: str) -> filelock.FileLock:
        """Held by the worker that measures `model` (wait on it with a timeout)."""
        (self.root / ".locks").mkdir(parents=True, exist_ok=True)
        return filelock.FileLock(self.root / ".locks" / f"{model}.backend.lock")

    def _read(self, model: str) -> dict[str, Any]:
        try:
            data = json.loads(self.path(model).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.path(model), exc)
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, model: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        entry = self._read(model).get(digest(key))
        return entry if isinstance(entry, dict) and isinstance(entry.get("choice"), dict) else None

    def put(self, model: str, key: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
        """Keep `entry` (with `choice`) under `key`; False when the root cannot be written."""
        data = self._read(model)
        data[digest(key)] = {**entry, "key": dict(key), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        kept = sorted(data.items(), key=lambda kv: str(kv[1].get("at", "")))[-KEEP:]
        target = self.path(model)
        tmp = target.with_name(f"{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(dict(kept), indent=1, sort_keys=True))
            os.replace(tmp, target)
        except OSError as exc:
            log.warning("cannot keep the backend choice in %s: %s", target, exc)
            with contextlib.suppress(OSError):  # not there, or its folder is not one
                tmp.unlink(missing_ok=True)
            return False
        return True
