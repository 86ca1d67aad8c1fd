"""A local HTTP server that answers `huggingface_hub` file downloads the way the Hub does.

The Hub is not reachable from test machines, and mocking `hf_hub_download` would hide the very
behaviour the store relies on (HEAD metadata, ETag checks, range resume). So this serves real
HTTP on 127.0.0.1 with the headers huggingface_hub 2.x reads in `get_hf_file_metadata` and
`http_get`: X-Repo-Commit, ETag / X-Linked-Etag (quoted sha256 for LFS files, git blob sha1
otherwise), X-Linked-Size, Content-Length, Accept-Ranges, 206 for `Range: bytes=N-`, and 404 with
X-Error-Code for unknown repos, revisions and files. Faults for tests: cut the connection after
N bytes on the first GET of a file (optionally holding the connection open, silent, until the test
releases it, so that the client can be killed before it notices), serve corrupted bytes, slow the
body down; counters record every request per file.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import unquote

DEFAULT_COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")
_FLIP = bytes(255 - i for i in range(256))  # corrupts every byte, keeps the length


@dataclass
class _Repo:
    commit: str
    files: dict[str, tuple[bytes, bool]] = field(default_factory=dict)  # path -> (content, lfs)


def git_blob_sha1(content: bytes) -> str:
    """The ETag the Hub gives a file kept in git (not LFS)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    """Serves registered files at `{url}/{repo}/resolve/{revision}/{path}`; use as a context."""

    def __init__(self, *, chunk_size: int = 16 * 1024) -> None:
        self.repos: dict[str, _Repo] = {}
        self.chunk_size = chunk_size
        self.chunk_delay = 0.0  # seconds to sleep after each body chunk (to make overlaps likely)
        self.cut_after: dict[str, int] = {}  # key -> bytes sent before dropping the first GET
        self.hold_cuts = False  # True: at a cut, wait (silent) for `release` before dropping
        self.release = threading.Event()
        self.corrupt: set[str] = set()  # keys served with flipped bytes (same length)
        self.gets: Counter[str] = Counter()
        self.heads: Counter[str] = Counter()
        self.bytes_sent: Counter[str] = Counter()
        self.ranges: dict[str, list[str | None]] = {}  # key -> Range header of each GET
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def key(repo: str, path: str) -> str:
        """Counter key of one file."""
        return f"{repo}/{path}"

    def add(
        self,
        repo: str,
        path: str,
        content: bytes,
        *,
        lfs: bool = True,
        commit: str = DEFAULT_COMMIT,
    ) -> str:
        """Publish a file; returns its key for the fault options and counters."""
        self.repos.setdefault(repo, _Repo(commit)).files[path] = (content, lfs)
        return self.key(repo, path)

    @property
    def url(self) -> str:
        assert self._server is not None, "start the hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _count(self, counter: Counter[str], key: str, n: int = 1) -> int:
        with self._lock:
            counter[key] += n
            return counter[key]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"  # keep-alive, as the Hub; huggingface_hub pools connections
    timeout = 10  # a client that goes quiet frees its thread

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _serve(self, *, body: bool) -> None:
        hub = self.fake
        match = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", self.path.split("?", 1)[0])
        if match is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        repo_id, revision, path = (unquote(g) for g in match.groups())
        repo = hub.repos.get(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        if revision not in (repo.commit, "main"):
            return self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
        if path not in repo.files:
            return self._error(404, "EntryNotFound", "Entry not found", repo.commit)
        key = hub.key(repo_id, path)
        content, lfs = repo.files[path]
        size = len(content)
        start, end = 0, size - 1
        range_header = self.headers.get("Range")
        if body:
            nth = hub._count(hub.gets, key)
            with hub._lock:
                hub.ranges.setdefault(key, []).append(range_header)
        else:
            nth = 0
            hub._count(hub.heads, key)
        if range_header and (m := _RANGE.match(range_header)):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                return self.end_headers()
        partial = (start, end) != (0, size - 1)
        self.send_response(206 if partial else 200)
        self.send_header("X-Repo-Commit", repo.commit)
        if lfs:
            sha = hashlib.sha256(content).hexdigest()
            self.send_header("ETag", f'"{sha}"')
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(size))
        else:
            self.send_header("ETag", f'"{git_blob_sha1(content)}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return None
        data = content
        if key in hub.corrupt:
            data = content.translate(_FLIP)
        data = data[start : end + 1]
        limit = hub.cut_after.get(key) if nth == 1 else None
        if limit is not None:
            data = data[:limit]
        for i in range(0, len(data), hub.chunk_size):
            chunk = data[i : i + hub.chunk_size]
            self.wfile.write(chunk)
            self.wfile.flush()
            hub._count(hub.bytes_sent, key, len(chunk))
            if hub.chunk_delay:
                time.sleep(hub.chunk_delay)
        if limit is not None:  # drop the connection mid-body, as a flaky network would
            if hub.hold_cuts:
                hub.release.wait(timeout=30)
            self.close_connection = True
        return None
