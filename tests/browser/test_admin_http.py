"""The dashboard's files as served by a real gunicorn: security headers, no inline script, no
third-party origin, no path out of admin_static/, and not on plain TCP by default."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from embedder.server.http.admin import ADMIN_STATIC, CSP
from tests.integration import server as srv

pytestmark = pytest.mark.browser

SVG_NS = "http://www.w3.org/2000/svg"  # a namespace name, not a fetch


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text.append(data)


def assert_secure_headers(headers: dict[str, str]) -> None:
    assert headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


def test_index_headers_and_no_inline_script(admin_server: srv.Server) -> None:
    status, headers, body = admin_server.request("admin.sock", "GET", "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert_secure_headers(headers)
    page = Tags()
    page.feed(body.decode())
    scripts = [a for t, a in page.tags if t == "script"]
    assert scripts and all((a.get("src") or "").startswith("/static/") for a in scripts)
    assert "".join(page.script_text).strip() == "", "inline script in index.html"
    for tag, attrs in page.tags:
        handlers = [k for k in attrs if k.startswith("on")]
        assert not handlers, f"inline event handler on <{tag}>: {handlers}"
        assert "style" not in attrs, f"inline style on <{tag}>"
        assert tag != "style", "a <style> block"
        for value in attrs.values():
            assert not (value or "").strip().lower().startswith("javascript:")
    # every control is labelled
    ids = {a.get("id") for t, a in page.tags if t in ("input", "select", "textarea")}
    labelled = {a.get("for") for t, a in page.tags if t == "label"}
    aria = {
        a.get("id")
        for t, a in page.tags
        if t in ("input", "select", "textarea") and a.get("aria-label")
    }
    assert ids - labelled - aria == set()


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("app.js", "text/javascript"),
        ("status.js", "text/javascript"),
        ("app.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
def test_static_files_headers(admin_server: srv.Server, name: str, ctype: str) -> None:
    status, headers, body = admin_server.request("admin.sock", "GET", f"/static/{name}")
    assert status == 200 and body == (ADMIN_STATIC / name).read_bytes()
    assert headers["content-type"].startswith(ctype)
    assert_secure_headers(headers)
    etag = headers["etag"]
    again, _, rest = admin_server.request(
        "admin.sock", "GET", f"/static/{name}", headers={"If-None-Match": etag}
    )
    assert again == 304 and rest == b""


def test_only_own_files_and_no_third_party_origin(admin_server: srv.Server) -> None:
    # Traversal spellings are ambiguous paths (400); the rest are not dashboard files (404).
    for path, want in (
        ("/static/../pyproject.toml", 400),
        ("/static/%2e%2e%2fpyproject.toml", 400),
        ("/static/.hidden", 404),
        ("/static/nope.js", 404),
        ("/static/index.py", 404),
    ):
        status, _, body = admin_server.request("admin.sock", "GET", path)
        assert status == want and b"[project]" not in body, (path, status)
    for f in sorted(ADMIN_STATIC.iterdir()):
        text = f.read_text().replace(SVG_NS, "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f.name
        if f.suffix == ".js":
            assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", text)
            assert not re.search(r"\beval\(|new Function\(", text)


def test_not_served_on_plain_tcp(admin_server: srv.Server) -> None:
    for path in ("/", "/static/app.js"):
        status, _, body = admin_server.request("tcp", "GET", path)
        assert status == 404, path
        assert b"EMBEDDER_TCP_EXPOSE=admin" in body
    status, _, _ = admin_server.request("tcp", "GET", "/health")
    assert status == 200
