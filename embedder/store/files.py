"""Model files on local disk: where each one lives, and fetching the missing ones once per machine.

Every gunicorn worker may call `ensure` at once; a per-model file lock lets one of them download
or build while the others wait and then find the files present. Hub files come through
`downloads` into a staging directory (resuming what a killed process left there; without the
Hub, from the user's Hugging Face cache) and reach their final name only after size and sha256
check out; built files are renamed into place only once their recipe has finished; so a reader
never sees a half-written or corrupt file. Every file is checked again whenever a model is made
ready (`integrity`): one that is no longer what it was is built or fetched again, or refused.
Progress goes to a small JSON file per model (`progress`), so any process can report it."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import filelock
from huggingface_hub import constants as hf_constants

from embedder import prepare
from embedder.catalog import (
    BuiltFile,
    Catalog,
    HubFile,
    ModelFile,
    ModelSpec,
    PackageFile,
    SharedFile,
)
from embedder.errors import DownloadError, EmbedderError, ModelUnavailable, UnknownModel
from embedder.store import downloads, integrity
from embedder.store.downloads import OFFLINE, STAGING_DIR, Corrupt, disk_error, disk_full, why
from embedder.store.progress import PROGRESS_FILE, REPORTED, Progress, pending, recorded, summary

log = logging.getLogger("embedder.store.files")

__all__ = ["PROGRESS_FILE", "STAGING_DIR", "ModelStore"]

_Located = tuple[str, ModelSpec, ModelFile, Path | None]  # label, owner, file, path
_NO_RECORD = "there is no record of its build (an earlier version made it, or its build was cut)"


class ModelStore:
    """The models root (`root/<model id>/<file name>`) and the only code that writes to it.

    `read_only`: `ensure` downloads and builds nothing (`models verify` checks what is there).

    `hf_cache` is the user's Hugging Face cache (default `$HF_HUB_CACHE`, else huggingface_hub's):
    a missing Hub file found there at its pinned revision is used when the Hub cannot be.
    """

    def __init__(
        self,
        root: Path,
        catalog: Catalog,
        *,
        endpoint: str | None = None,
        offline: bool | None = None,
        hf_cache: Path | None = None,
        read_only: bool = False,
    ) -> None:
        self.root = Path(root)
        self.read_only = read_only  # `ensure` makes nothing: it fails unless every file is sound
        self.catalog = catalog
        endpoint = endpoint or os.environ.get("HF_ENDPOINT") or hf_constants.ENDPOINT
        self.endpoint = endpoint.rstrip("/")
        env_offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
        self.offline = env_offline if offline is None else offline
        self._offline_by_env = offline is None and env_offline  # then unsetting it is a way out
        cache = hf_cache or os.environ.get("HF_HUB_CACHE") or hf_constants.HF_HUB_CACHE
        self.hf_cache = Path(cache).expanduser()
        self.digests = integrity.Digests()

    # --- where files are and what state they are in ------------------------------------------

    def path(self, spec: ModelSpec, name: str) -> Path:
        """Where the engine reads `name` of `spec` (a PackageFile is read inside its package)."""
        f = next((f for f in spec.files if f.name == name), None)
        if f is None:
            have = ", ".join(f.name for f in spec.files)
            msg = f"model {spec.id!r} has no file {name!r}; its files are: {have}"
            raise UnknownModel(msg, model=spec.id, file=name)
        owner, f = self._owner(spec, f)
        if (found := self._resolve(owner, f)) is None:
            assert isinstance(f.origin, PackageFile)
            raise DownloadError(self._pip_message(owner, f, f.origin), model=spec.id)
        return found

    def missing(self, spec: ModelSpec) -> list[str]:
        """Absent files of `spec` and its dependencies (a dependency's as `<model id>/<name>`)."""
        return [label for label, _, _, p in self._closure_files(spec) if not _present(p)]

    def stale(self, spec: ModelSpec) -> list[str]:
        """Present files of `spec` and its dependencies that `ensure` builds or fetches again
        (damaged, or stale by `prepare.WHY_REBUILD`), as `<label>: <why>`."""
        return [
            f"{label}: {why.reason}"
            for label, m, f, p in self._closure_files(spec)
            if not isinstance(f.origin, PackageFile)
            and (why := self._why_remake(m, f, p)) is not None
        ]

    def unusable(self, spec: ModelSpec) -> list[str]:
        """Present files of `spec` and its dependencies that must not serve as they are (not
        the bytes they should be; made for another kind of CPU), as `<label>: <why>`."""
        return [
            f"{label}: {why.reason}"
            for label, m, f, p in self._closure_files(spec)
            if (why := self._why_remake(m, f, p)) is not None and not why.usable
        ]

    def disk_size(self, spec: ModelSpec) -> int:
        """Bytes of the model's own files that exist, wherever they live."""
        paths = {self._resolve(*self._owner(spec, f)) for f in spec.files}
        return sum(p.stat().st_size for p in paths if p is not None and p.is_file())

    def verify(self, spec: ModelSpec) -> list[str]:
        """Problems on disk: missing files, and files that must not serve (see `unusable`)."""
        problems: list[str] = []
        for label, m, f, p in self._closure_files(spec):
            if p is None or not p.is_file():
                problems.append(f"{label}: missing" + (f" (expected at {p})" if p else ""))
            elif (why := self._why_remake(m, f, p)) is not None and not why.usable:
                problems.append(f"{label}: {why.reason} ({p})")
        return problems

    def progress(self, spec: ModelSpec) -> dict[str, Any]:
        """`spec` and its dependencies as the process ensuring them last wrote (or as on disk)."""
        return summary(spec.id, [e for m in self.catalog.closure(spec) for e in self._entries(m)])

    # --- making files present ------------------------------------------------------------------

    def ensure(self, spec: ModelSpec) -> None:
        """Download or build whatever `spec` needs; many processes may call this at once."""
        if self.read_only:
            if problems := self.verify(spec):
                raise ModelUnavailable(f"model {spec.id!r}: {'; '.join(problems)}", model=spec.id)
            return
        for m in self.catalog.closure(spec):  # dependencies first
            try:
                self._ensure_own(m)
            except EmbedderError as e:
                if m.id == spec.id:
                    raise
                # Say why another model's files are in the way of this one.
                why = f"{spec.id} {self._needs(spec, m)}"
                details = {
                    **e.details,
                    "summary": f"{why}: {e.details.get('summary', e.message)}",
                }
                raise type(e)(f"{why}: {e.message}", param=e.param, **details) from e

    def _needs(self, spec: ModelSpec, dep: ModelSpec) -> str:
        for f in spec.files:
            o = f.origin
            if isinstance(o, SharedFile) and o.model == dep.id:
                return f"shares {dep.id}'s {o.name}"
            if not isinstance(o, BuiltFile):
                continue
            for ref in o.inputs:
                if ref.model == dep.id and o.recipe.startswith("quantize"):
                    graph = f"{dep.precision.upper()} graph ({ref.name})"
                    return f"is quantized to INT8 here from {dep.id}'s {graph}"
                if ref.model == dep.id:
                    return f"is built here from {dep.id}'s {ref.name}"
        if spec.embedder == dep.id:
            return f"scores with {dep.id}'s embeddings"
        return f"needs {dep.id}"

    def _ensure_model(self, m: ModelSpec, rebuild: bool = False) -> None:
        """Make `m`'s absent files, and with `rebuild` its stale built ones too."""
        for f in self._missing_own(m):  # fail before waiting on the lock when waiting cannot help
            o = f.origin
            if isinstance(o, PackageFile):
                raise DownloadError(self._pip_message(m, f, o), model=m.id)
            if isinstance(o, HubFile) and self.offline and not downloads.cached(o, self.hf_cache):
                raise self._fetch_error(m, self._offline_reason())
        model_dir, lock = self.root / m.id, filelock.FileLock(self.root / ".locks" / f"{m.id}.lock")
        try:
            model_dir.mkdir(parents=True, exist_ok=True)
            (self.root / ".locks").mkdir(exist_ok=True)
            lock.acquire()
        except OSError as e:
            raise disk_error(model_dir, e) from e
        try:
            # another process may have made (or rebuilt) them while we waited
            todo = self._missing_own(m, stale=rebuild)
            if todo:
                entries = {
                    e["name"]: e if e["state"] == "done" else pending(m.id, e["name"])
                    for e in self._entries(m)
                }
                prog = Progress(model_dir / PROGRESS_FILE, entries)
                prog.write()
                for f in sorted(todo, key=lambda f: isinstance(f.origin, BuiltFile)):
                    self._make(m, f, prog, set(), rebuild)
        finally:  # partial downloads stay for the next attempt until the model is complete
            downloads.tidy(model_dir / STAGING_DIR, keep_partials=bool(self._missing_own(m)))
            lock.release()

    def _make(
        self, m: ModelSpec, f: ModelFile, prog: Progress, seen: set[str], rebuild: bool = False
    ) -> None:
        path = self._resolve(*self._owner(m, f))
        why = self._why_remake(m, f, path) if rebuild else None
        if _present(path) and why is None:
            return
        if f.name in seen:
            raise ModelUnavailable(f"model {m.id!r}: {f.name} is built from itself")
        seen.add(f.name)
        o = f.origin
        try:
            if isinstance(o, HubFile):
                self._download(m, f, o, prog)
            elif isinstance(o, BuiltFile):
                for ref in o.inputs:
                    if ref.model == m.id:  # an own input: make it first (order in `files` is free)
                        self._make(m, m.file(ref.name), prog, seen, rebuild)
                self._build(m, f, o, prog)
            elif isinstance(o, PackageFile):
                damage = why.reason if why is not None else None
                raise DownloadError(self._pip_message(m, f, o, damage), model=m.id)
            elif o.model == m.id:
                self._make(m, m.file(o.name), prog, seen, rebuild)
            else:  # another model's file: `ensure` made that model present first
                raise DownloadError(f"model {m.id!r}: {o.model}/{o.name} is missing", model=m.id)
        except EmbedderError as e:
            if prog.entries.get(f.name, {}).get("state") != "error":
                # The file's own part: the cause is the model's (status, health `failures`).
                prog.update(f.name, state="error", error=e.details.get("summary", e.message))
            raise

    def _download(self, m: ModelSpec, f: ModelFile, o: HubFile, prog: Progress) -> None:
        staging, final = self.root / m.id / STAGING_DIR, self.root / m.id / f.name
        endpoint, cache = None if self.offline else self.endpoint, self.hf_cache
        try:
            got = downloads.fetch(o, f.name, staging, prog, endpoint=endpoint, cache=cache)
            if got is None:
                raise self._fetch_error(m, self._offline_reason())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(got.path, final)
            integrity.write_record(final, got.size, got.sha256, f"downloaded from {o.repo}")
        except EmbedderError:
            raise
        except Corrupt as e:
            raise DownloadError(
                f"model {m.id!r}: {o.path} of {o.repo}@{o.revision} {e}", model=m.id, files=[f.name]
            ) from e
        except Exception as e:  # whatever the Hub client raised, the file could not be fetched
            if disk_full(e):
                raise disk_error(staging, e) from e
            raise self._fetch_error(m, why(e, o)) from e
        size, sha = got.size, got.sha256
        self.digests.remember(final, sha)
        prog.update(f.name, state="done", bytes_done=size, bytes_total=size, sha256=sha)

    def _build(self, m: ModelSpec, f: ModelFile, o: BuiltFile, prog: Progress) -> None:
        inputs = [self._resolve(*self._owner(m, ModelFile(ref.name, ref))) for ref in o.inputs]
        if (recipe := prepare.RECIPES.get(o.recipe)) is None:
            raise ModelUnavailable(f"model {m.id!r}: no recipe {o.recipe!r} to build {f.name}")
        if lost := [str(p) for p in inputs if p is None or not p.is_file()]:
            raise DownloadError(f"model {m.id!r}: {f.name} needs {', '.join(lost)}", model=m.id)
        final = self.root / m.id / f.name
        tmp = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.tmp{final.suffix}")
        prog.update(f.name, state="building", bytes_done=0, bytes_total=None)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            recipe([p for p in inputs if p is not None], tmp)
            size, sha = tmp.stat().st_size, integrity.sha256(tmp)  # FileNotFoundError: no file
            os.replace(tmp, final)
            integrity.write_record(final, size, sha, f"built by the recipe {o.recipe}")
        except Exception as e:
            if disk_full(e):
                raise disk_error(final.parent, e) from e
            msg = f"model {m.id!r}: recipe {o.recipe!r} failed to build {f.name}: {e!r}"
            raise ModelUnavailable(msg, model=m.id) from e
        finally:
            tmp.unlink(missing_ok=True)
        self.digests.remember(final, sha)
        prog.update(f.name, state="done", bytes_done=size, bytes_total=size)

    # --- helpers -------------------------------------------------------------------------------

    def _owner(self, m: ModelSpec, f: ModelFile) -> tuple[ModelSpec, ModelFile]:
        """The model and file that really hold `f` (following SharedFile references)."""
        while isinstance(f.origin, SharedFile):
            m = self.catalog.get(f.origin.model)
            f = m.file(f.origin.name)
        return m, f

    def _resolve(self, m: ModelSpec, f: ModelFile) -> Path | None:
        """Path of a file that is no reference; None for a package that is not installed."""
        if not isinstance(f.origin, PackageFile):
            return self.root / m.id / f.name
        try:
            dist = importlib.metadata.distribution(f.origin.dist)
        except importlib.metadata.PackageNotFoundError:
            return None
        return Path(str(dist.locate_file(f.origin.path)))

    def _ensure_own(self, m: ModelSpec) -> None:
        """Make `m`'s absent files, and again those `_why_remake` finds (damaged on disk, an
        older recipe's, made for another kind of CPU) in place: the new file replaces the old
        one only once made. If that fails, an older recipe's file serves on (it computes the
        same function) and the log says so; one that must not serve goes (a package's file is
        left to pip), and the error is the model's, as is any absent file's."""
        stale = [
            (f, path, why)
            for f in m.files
            if not isinstance(f.origin, SharedFile)  # its owner, made ready first, checks it
            and (path := self._resolve(m, f)) is not None
            and (why := self._why_remake(m, f, path)) is not None
        ]
        if not stale and not self._missing_own(m):
            return
        for f, path, why in stale:
            log.warning("%s: %s; %s", path, why.reason, _remedy(f))
        try:
            self._ensure_model(m, rebuild=bool(stale))
        except EmbedderError as e:
            if not stale or self._missing_own(m):
                raise
            refused = []
            if any(not why.usable for _, _, why in stale):
                with filelock.FileLock(self.root / ".locks" / f"{m.id}.lock"):
                    for f, path, _ in stale:  # unless another process has made it meanwhile
                        if (why := self._why_remake(m, f, path)) is not None and not why.usable:
                            if not isinstance(f.origin, PackageFile):
                                integrity.remove(path)
                            refused.append(path)
            if refused:
                raise
            for f, path, _ in stale:
                if self._why_remake(m, f, path) is not None:
                    log.warning("%s: building it again failed, it serves on: %s", path, e.message)

    def _missing_own(self, m: ModelSpec, stale: bool = False) -> list[ModelFile]:
        """Own files that are absent, and with `stale` those to make again (`_why_remake`)."""
        paths = [(f, self._resolve(*self._owner(m, f))) for f in m.files]
        return [
            f
            for f, p in paths
            if not _present(p) or (stale and self._why_remake(m, f, p) is not None)
        ]

    def _why_remake(self, m: ModelSpec, f: ModelFile, path: Path | None) -> prepare.Stale | None:
        """Why `m`'s present file `f` at `path` must be made again (or, a package's, must not
        serve), else None: it is not the bytes it should be (`integrity`), it is stale by its
        recipe (`prepare.WHY_REBUILD`), or, built, it has no record to check it against."""
        o = f.origin
        if isinstance(o, SharedFile) or not _present(path):
            return None
        assert path is not None
        want = integrity.expected(f.origin, path, self.root / m.id)
        try:
            wrong = self.digests.problem(path, want) if want is not None else None
        except OSError as e:  # unreadable: as unfit to serve as damaged
            wrong = f"it cannot be read ({e.strerror or e})"
        if wrong is not None:
            return prepare.Stale(wrong, usable=False)
        if not isinstance(o, BuiltFile):
            return None
        if (check := prepare.WHY_REBUILD.get(o.recipe)) and (why := check(path)) is not None:
            return why
        return prepare.Stale(_NO_RECORD, usable=True) if want is None else None

    def _closure_files(self, spec: ModelSpec) -> list[_Located]:
        """(label, owner, file, path) over the closure, each real file once."""
        out: dict[tuple[str, str], _Located] = {}
        for m in self.catalog.closure(spec):
            for f in m.files:
                owner, real = self._owner(m, f)
                label = real.name if owner.id == spec.id else f"{owner.id}/{real.name}"
                out.setdefault(
                    (owner.id, real.name), (label, owner, real, self._resolve(owner, real))
                )
        return list(out.values())

    def _pip_message(
        self, m: ModelSpec, f: ModelFile, o: PackageFile, damage: str | None = None
    ) -> str:
        """How to install the package, or with `damage` (what is wrong with its file) how to
        install it again."""
        if damage is None:
            cmd = " ".join(["pip install", *o.pip_flags.split(), o.dist])
            state = "which is not installed here; install it with"
        else:
            cmd = " ".join(["pip install --force-reinstall", *o.pip_flags.split(), o.dist])
            state = f"which is damaged here ({damage}); install it again with"
        return (
            f"model {m.id!r}: {f.name} is {o.path} of the Python package {o.dist}, {state} `{cmd}`"
        )

    def _offline_reason(self) -> str:
        return f"{OFFLINE}, and the Hugging Face cache at {self.hf_cache} does not have them"

    def _fetch_error(self, m: ModelSpec, reason: str) -> DownloadError:
        """The whole story for whoever asked for `m` (`message`), told apart as the model's own
        part (`summary`) and the part every model that failed alike shares (`cause`), so a
        service with many such models can say the shared part once."""
        todo = self._missing_own(m, stale=True)  # a damaged one is removed if it stays so
        hub = [(f.name, o) for f in todo if isinstance(o := f.origin, HubFile)]
        names, where = [name for name, _ in hub], self.root / m.id
        sources = ", ".join(sorted({f"{o.repo}@{o.revision}" for _, o in hub}))
        full = (
            f"model {m.id!r} is missing {', '.join(names)}, which belong in {where} and come "
            f"from {sources} on {self.endpoint}"
        )
        short = ", ".join(sorted({f"{o.repo}@{o.revision[:12]}" for _, o in hub}))
        summary = f"model {m.id!r} is missing {', '.join(names)} (from {short}) in {where}"
        way_out = ", or unset HF_HUB_OFFLINE" if self._offline_by_env else ""
        if self.catalog.name != "starter":
            way_out += (
                ". Without the Hub, the offline starter catalog serves at once: `make run`, "
                "or EMBEDDER_CATALOG=starter"
            )
        mirror = f"to the same place here, or set HF_ENDPOINT to a reachable mirror{way_out}"
        return DownloadError(
            f"{full}: {reason}. To get them, run `embedder models pull {m.id}` on a machine "
            f"with Hub access and copy {where} {mirror}",
            model=m.id,
            files=names,
            directory=str(where),
            summary=summary,
            cause=f"{reason} (Hub: {self.endpoint}). To get the files, run `embedder models "
            f"pull` on a machine with Hub access and copy {self.root} {mirror}",
        )

    def _entries(self, m: ModelSpec) -> list[dict[str, Any]]:
        """Progress of the model's own files; what is on disk overrides what was written."""
        old_entries, out = recorded(self.root / m.id), []
        for f in m.files:
            if isinstance(f.origin, SharedFile):
                continue  # reported by the model that holds it
            e, old, p = pending(m.id, f.name), old_entries.get(f.name, {}), self._resolve(m, f)
            if p is not None and p.is_file():
                size = p.stat().st_size
                e.update(state="done", bytes_done=size, bytes_total=size)
                e.update({"sha256": old["sha256"]} if "sha256" in old else {})
            elif p is None and isinstance(f.origin, PackageFile):
                e.update(state="error", error=self._pip_message(m, f, f.origin))
            elif old.get("state", "done") != "done":  # "done" but absent: deleted since
                e.update({k: v for k, v in old.items() if k in REPORTED})
            out.append(e)
        return out


def _remedy(f: ModelFile) -> str:
    """What `ensure` does about a file that `_why_remake` names."""
    if isinstance(f.origin, HubFile):
        return "fetching it again"
    if isinstance(f.origin, PackageFile):
        return f"it cannot serve until the package {f.origin.dist} is installed again"
    return "building it again"


def _present(p: Path | None) -> bool:
    return p is not None and p.is_file()
