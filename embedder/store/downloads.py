"""One Hub file into a model's staging directory, checked before anyone may use it.

A download keeps its bytes in `<staging>/<name>.<tag>.incomplete`, where the tag is the file's
ETag on the Hub (its sha256 for LFS files, its git blob sha1 otherwise). That file outlives the
process: when a worker is killed or the machine reboots mid-download, the next attempt asks only
for the missing bytes (an HTTP Range request). A partial file of another ETag is another version
of the file and is deleted. The HTTP work is huggingface_hub's own (`get_hf_file_metadata`,
`http_get`), so endpoints, tokens, redirects and its in-call retries behave as in
`hf_hub_download`. Without the Hub, a file the user's Hugging Face cache holds at the pinned
revision is hard-linked (or copied) in instead, once its sha256 checks out.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard
from urllib.parse import urlsplit

from huggingface_hub import errors as hf_errors
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]  # public, lazy

from embedder.catalog import HubFile
from embedder.errors import DownloadError
from embedder.store.integrity import sha256
from embedder.store.progress import Progress, bar_class

STAGING_DIR = ".download"  # under the model's directory; a file leaves it only once verified
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TAG = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_PARTIAL = ".incomplete"
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
OFFLINE = "Hub downloads are disabled here (HF_HUB_OFFLINE)"


class Corrupt(Exception):
    """The bytes do not have the size or sha256 they must have; `str()` says which."""


@dataclass(frozen=True)
class Fetched:
    """A verified file in the staging directory, to be renamed into place."""

    path: Path
    size: int
    sha256: str


def fetch(
    o: HubFile, name: str, staging: Path, prog: Progress, *, endpoint: str | None, cache: Path
) -> Fetched | None:
    """From the Hub at `endpoint` (None: offline), else from the Hugging Face cache at `cache`.

    None when offline and the cache lacks the file; when online and neither has it, whatever
    the Hub client raised. A corrupt download or a full disk is raised at once.
    """
    failure: Exception | None = None
    if endpoint is not None:
        try:
            return download(o, name, staging, endpoint, prog)
        except Exception as e:
            if isinstance(e, Corrupt) or disk_full(e):
                raise
            failure = e  # the Hub could not be used: the cache may still have the file
    if (got := from_cache(o, name, staging, cache, prog)) is not None:
        return got
    if failure is not None:
        raise failure
    return None


def download(o: HubFile, name: str, staging: Path, endpoint: str, prog: Progress) -> Fetched:
    """Fetch `o` as `name`, resuming a partial file that a previous attempt left behind.

    A partial file is only resumed when the result can be checked (a pinned sha256, or an LFS
    ETag); if the whole then fails the check, the kept bytes were bad (a crash can garble the
    tail of a file) and the file is fetched once more from the start.
    """
    url = hf_hub_url(o.repo, o.path, revision=o.revision, endpoint=endpoint)
    meta = get_hf_file_metadata(url, endpoint=endpoint)
    headers = build_hf_headers()
    source = url
    if meta.xet_file_data is None and meta.location != url:  # as hf_hub_download: one hop less
        source = meta.location
        if urlsplit(source)[:2] != urlsplit(url)[:2]:  # a signed CDN address: no token for it
            headers.pop("authorization", None)
    want = o.sha256 or (meta.etag if _SHA256.fullmatch(meta.etag or "") else None)
    partial = partial_path(staging, name, meta.etag, meta.commit_hash)
    partial.parent.mkdir(parents=True, exist_ok=True)
    for old in _partials(staging, name):
        if old != partial:  # another version of the file: useless
            old.unlink(missing_ok=True)

    def report(done: int, total: int | None) -> None:
        prog.update(name, bytes_done=done, bytes_total=total or meta.size)

    while True:
        have = partial.stat().st_size if partial.exists() else 0
        resume = have if want and meta.size is not None and have <= meta.size else 0
        prog.update(name, state="downloading", bytes_done=resume, bytes_total=meta.size)
        with partial.open("r+b" if resume else "wb") as out:
            out.seek(resume)
            http_get(
                source,
                out,
                resume_size=resume,
                headers=headers,
                expected_size=meta.size,
                displayed_filename=name,
                tqdm_class=bar_class(report),
            )
        size = partial.stat().st_size
        prog.update(name, state="verifying", bytes_done=size)
        sha = sha256(partial)
        if (meta.size is None or size == meta.size) and (want is None or sha == want):
            return Fetched(partial, size, sha)
        partial.unlink()
        if not resume:
            raise Corrupt(
                f"arrived corrupt ({size} bytes, sha256 {sha}; expected {meta.size} bytes, "
                f"sha256 {want}); it was deleted, try again"
            )


def partial_path(staging: Path, name: str, etag: str | None, commit: str | None) -> Path:
    """Where the download of `name` at this ETag keeps its bytes between attempts."""
    tag = etag if etag and _TAG.fullmatch(etag) else None
    tag = tag or hashlib.sha256(f"{commit}\0{etag}".encode()).hexdigest()  # not a content hash
    return staging / f"{name}.{tag}{_PARTIAL}"


def _partials(staging: Path, name: str) -> list[Path]:
    target = staging / name
    pattern = re.compile(re.escape(target.name) + r"\.[0-9a-f]{40,64}" + re.escape(_PARTIAL))
    try:
        return [p for p in target.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return []


def cached(o: HubFile, cache_dir: Path) -> Path | None:
    """The file in the Hugging Face cache at `cache_dir` at the pinned revision, if it is there."""
    try:
        found = hf_hub_download(
            o.repo, o.path, revision=o.revision, cache_dir=cache_dir, local_files_only=True
        )
    except (OSError, ValueError):  # LocalEntryNotFoundError is a FileNotFoundError
        return None
    return Path(found)


def from_cache(
    o: HubFile, name: str, staging: Path, cache_dir: Path, prog: Progress
) -> Fetched | None:
    """Link (or copy) `o` from the Hugging Face cache into staging; None if it is not there.

    Checked against the pinned sha256, else the cache's blob name when that is an LFS sha256.
    """
    if (found := cached(o, cache_dir)) is None:
        return None
    blob = found.resolve()  # snapshots/<commit>/<path> links to blobs/<etag>
    want = o.sha256 or (blob.name if _SHA256.fullmatch(blob.name) else None)
    size = blob.stat().st_size
    prog.update(name, state="verifying", bytes_done=0, bytes_total=size)
    copy = staging / f"{name}.{uuid.uuid4().hex[:8]}.cached"
    copy.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            os.link(blob, copy)
        except OSError:  # another file system, or links not allowed here
            shutil.copyfile(blob, copy)
        sha = sha256(copy)
        if want and sha != want:
            raise Corrupt(
                f"in the Hugging Face cache at {found} is corrupt (sha256 {sha}, expected "
                f"{want}); it was not used"
            )
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    prog.update(name, bytes_done=size)
    return Fetched(copy, size, sha)


def tidy(staging: Path, *, keep_partials: bool) -> None:
    """Remove the staging directory, or only its empty folders while partial files matter."""
    if not keep_partials:
        shutil.rmtree(staging, ignore_errors=True)
        return
    folders = [p for p in staging.rglob("*") if p.is_dir()]
    for folder in [*sorted(folders, key=lambda p: len(p.parts), reverse=True), staging]:
        with contextlib.suppress(OSError):  # not empty, or gone
            folder.rmdir()


def disk_full(e: BaseException) -> TypeGuard[OSError]:
    """Whether `e` is the disk refusing a write (full, quota, permissions, read-only)."""
    return isinstance(e, OSError) and e.errno in _DISK_ERRNOS


def disk_error(path: Path, exc: OSError) -> DownloadError:
    where = exc.filename or path
    return DownloadError(
        f"cannot write model files at {where}: {exc.strerror or exc}; free some disk space, fix "
        "the permissions, or set EMBEDDER_MODELS_ROOT to a writable directory",
        path=str(where),
    )


def why(e: Exception, o: HubFile) -> str:
    """Why the Hub client could not fetch `o`, in words for an error message."""
    if isinstance(e, hf_errors.OfflineModeIsEnabled):
        return OFFLINE
    if isinstance(e, hf_errors.EntryNotFoundError):
        return f"the server has no {o.path} in {o.repo}@{o.revision}"
    if isinstance(e, hf_errors.RevisionNotFoundError | hf_errors.RepositoryNotFoundError):
        return f"the server has no {o.repo}@{o.revision}"
    # Without the file's URL, so every file that failed alike gives the same words.
    said = re.sub(r" with url: \S+", "", str(e)).replace("\n", " ")
    return f"the Hub could not be reached ({type(e).__name__}: {said})"
