"""The admin dashboard: static files from admin_static/, served on admin.sock.

The files ship as package data next to this module (in a checkout that directory links to the
top-level admin_static/), so an installed copy serves the dashboard from any directory.

No build step and no third-party origin: index.html at `/`, its assets at `/static/<name>`.
Every response carries a strict Content-Security-Policy (no inline script or style, only this
origin), so the page can only talk to this service.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import falcon

ADMIN_STATIC = Path(__file__).resolve().parent / "admin_static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

# What the dashboard ships, by extension; anything else under admin_static/ is not served.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
# One flat directory: plain names, no leading dot, no separators, so no way out of the root.
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


def _not_found(what: str) -> falcon.HTTPNotFound:
    return falcon.HTTPNotFound(description=what, headers=SECURITY_HEADERS)


def _send(req: falcon.Request, resp: falcon.Response, path: Path, head: bool = False) -> None:
    """A file with its type, the security headers, and an ETag so reloads revalidate cheaply."""
    try:
        data = path.read_bytes()
    except OSError:
        raise _not_found(f"{req.path} is not part of the admin dashboard") from None
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    resp.set_headers(SECURITY_HEADERS)
    resp.set_header("Cache-Control", "no-cache")  # always revalidate: a new release shows at once
    resp.set_header("ETag", etag)
    resp.content_type = CONTENT_TYPES[path.suffix.lower()]
    if etag in (req.get_header("If-None-Match") or ""):
        resp.status = falcon.HTTP_304
        return
    if head:
        resp.set_header("Content-Length", str(len(data)))
        return
    resp.data = data


class AdminPage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        index = self.root / "index.html"
        if not index.is_file():
            raise _not_found("the admin dashboard is not installed")
        _send(req, resp, index)

    def on_head(self, req: falcon.Request, resp: falcon.Response) -> None:
        index = self.root / "index.html"
        if not index.is_file():
            raise _not_found("the admin dashboard is not installed")
        _send(req, resp, index, head=True)


class AdminStatic:
    """`/static/<name>`: one file of the dashboard's flat directory, by a known extension."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _file(self, req: falcon.Request, name: str) -> Path:
        path = self.root / name
        if (
            not _NAME.match(name)
            or path.suffix.lower() not in CONTENT_TYPES
            or not path.is_file()
            or path.resolve().parent != self.root.resolve()
        ):
            raise _not_found(f"{req.path} is not part of the admin dashboard")
        return path

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        _send(req, resp, self._file(req, name))

    def on_head(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        _send(req, resp, self._file(req, name), head=True)


def add_admin_routes(app: falcon.App[Any, Any], root: Path) -> None:
    app.add_route("/", AdminPage(root))
    app.add_route("/static/{name}", AdminStatic(root))
