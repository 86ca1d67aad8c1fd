"""Download and build progress of the model store, kept in one small JSON file per model.

The process that holds a model's lock writes `root/<id>/.progress.json` (atomically, byte counts
at most 4 times a second); any process reads it to report progress. A file left behind by a
process that died shows its active entries as pending again, marked `interrupted`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from huggingface_hub.utils.tqdm import tqdm as hf_tqdm

PROGRESS_FILE = ".progress.json"
ACTIVE = ("verifying", "building", "downloading")  # reported in this order of precedence
REPORTED = ("state", "bytes_done", "bytes_total", "error", "interrupted")  # kept while not done
_THROTTLE_S = 0.25

Report = Callable[[int, int | None], None]  # (bytes done, bytes total if known)


def pending(model: str, name: str) -> dict[str, Any]:
    """The entry of a file nobody works on."""
    return {"model": model, "name": name, "state": "pending", "bytes_done": 0, "bytes_total": None}


class Progress:
    """One model's progress file, replaced atomically; byte counts at most 4 times a second."""

    def __init__(self, path: Path, entries: dict[str, dict[str, Any]]) -> None:
        self.path, self.entries, self._last = path, entries, 0.0

    def update(self, name: str, **fields: Any) -> None:
        """Change `name`'s entry; written at once when its state changes, else throttled."""
        if (entry := self.entries.get(name)) is None:
            return
        changed = fields.get("state", entry["state"]) != entry["state"]
        entry.update(fields)
        if changed or time.monotonic() - self._last >= _THROTTLE_S:
            self.write()

    def write(self) -> None:
        self._last = time.monotonic()
        doc = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "updated": time.time(),
            "files": list(self.entries.values()),
        }
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.path)
        except OSError:  # advisory only: a full disk must not hide the real error
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def recorded(model_dir: Path) -> dict[str, dict[str, Any]]:
    """The model's progress file by file name; a dead writer's work shows as pending again."""
    try:
        doc = json.loads((model_dir / PROGRESS_FILE).read_text())
        entries = {e["name"]: e for e in doc["files"] if isinstance(e, dict) and "name" in e}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not _alive(doc.get("pid"), doc.get("host")):
        for e in entries.values():
            if e.get("state") in ACTIVE:
                e.update(state="pending", interrupted=True)
    return entries


def summary(model: str, files: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One model's report: the most telling state of its files and their byte sums."""
    files = list(files)
    states = {e["state"] for e in files}
    state = next((s for s in ACTIVE if s in states), "pending")
    if "error" in states:
        state = "error"
    elif states <= {"done"}:
        state = "ready"
    done = sum(int(e.get("bytes_done") or 0) for e in files)
    total = sum(int(e.get("bytes_total") or 0) for e in files)
    return dict(model=model, state=state, bytes_done=done, bytes_total=total, files=files)


def bar_class(report: Report) -> type[hf_tqdm]:
    """A silent tqdm that hands huggingface_hub's byte counts to `report(done, total)`.

    huggingface_hub opens it with `initial` set to the bytes a resumed download already had, so
    the counts include them.
    """

    class _Bar(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True  # silent; `update` below still counts
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
            report(int(self.n), self.total)

        def update(self, n: float | None = 1) -> bool | None:
            self.n += n or 0
            report(int(self.n), self.total)
            return None

    return _Bar


def _alive(pid: object, host: object) -> bool:
    """Whether a progress file's writer still runs (another host's: assume so)."""
    if not isinstance(pid, int) or host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
