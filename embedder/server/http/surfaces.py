"""Which listener a request came in on, and what each listener may serve.

TCP may face an overlay network with no auth, so it serves only the OpenAI REST API and
/health unless more is asked for (EMBEDDER_TCP_EXPOSE); each unix socket serves its own part.

The surface is decided from the route the router matched (its URI template), never from the
raw path: the router ignores leading slashes and gunicorn decodes %2F, so `//rpc` and
`/%2Frpc` reach the /rpc resource while reading differently. Paths that can be read two ways
(empty or dot segments, encoded slashes) are refused outright with 400.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import unquote, urlsplit

import falcon

REST, RPC, ADMIN, METRICS, HEALTH = "rest", "rpc", "admin", "metrics", "health"

SOCKET_SURFACES: dict[str, frozenset[str]] = {
    "rest.sock": frozenset({REST, HEALTH, METRICS}),
    "rpc.sock": frozenset({RPC, HEALTH, METRICS}),
    "admin.sock": frozenset({ADMIN, RPC, REST, HEALTH, METRICS}),
}
TCP_SURFACES = frozenset({REST, HEALTH})
EVERYTHING = frozenset({REST, RPC, ADMIN, METRICS, HEALTH})

# Every route the app adds, by the URI template falcon reports for it. A route missing here
# is served nowhere (fail closed); tests/http/test_listeners.py checks the table is complete.
ROUTE_SURFACES: dict[str, str] = {
    "/v1/embeddings": REST,
    "/embeddings": REST,
    "/v1/models": REST,
    "/v1/models/{model_id}": REST,
    "/v1/rerank": REST,
    "/v2/rerank": REST,
    "/rerank": REST,
    "/openapi.json": REST,
    "/health": HEALTH,
    "/metrics": METRICS,
    "/rpc": RPC,
    "/": ADMIN,
    "/static/{name}": ADMIN,
}


def listener_of(env: dict[str, Any]) -> str:
    """'rest.sock' / 'rpc.sock' / 'admin.sock' / 'tcp', or 'direct' outside gunicorn."""
    sock = env.get("gunicorn.socket")
    if sock is None:
        return "direct"
    try:
        if sock.family == socket.AF_UNIX:
            name = sock.getsockname()
            name = name.decode() if isinstance(name, bytes) else str(name)
            return name.rsplit("/", 1)[-1] or "unix"
    except OSError:
        return "tcp"
    return "tcp"


def ambiguity(raw_target: str, path: str) -> str | None:
    """Why a request path can be read more than one way, or None when it is canonical.

    `raw_target` is the request target as sent (origin or absolute form), `path` the decoded
    path the router sees. One trailing slash is fine: falcon strips it."""
    raw = raw_target
    if "://" in raw.split("?", 1)[0]:
        raw = urlsplit(raw).path or "/"
    raw_path = raw.split("?", 1)[0].split("#", 1)[0]
    if "%2f" in raw_path.lower():
        return "an encoded slash"
    for candidate in (unquote(raw_path), path):
        if not candidate.startswith("/"):
            return "no leading slash"
        segments = candidate[1:].split("/")
        if len(segments) > 1 and segments[-1] == "":
            segments = segments[:-1]
        if candidate != "/" and "" in segments:
            return "an empty segment (//)"
        if "." in segments or ".." in segments:
            return "a dot segment (. or ..)"
    return None


class ListenerGuard:
    """Falcon middleware: refuses ambiguous paths, and routes the request's listener does not
    serve (decided once the router has matched the route)."""

    def __init__(self, tcp_expose: frozenset[str] | set[str] | tuple[str, ...] = ()) -> None:
        self.tcp = TCP_SURFACES | frozenset(tcp_expose)

    def allowed(self, listener: str) -> frozenset[str]:
        if listener == "tcp":
            return self.tcp
        return SOCKET_SURFACES.get(listener, EVERYTHING)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.listener = listener_of(req.env)
        raw = req.env.get("RAW_URI") or req.env.get("REQUEST_URI") or req.path
        why = ambiguity(str(raw), req.path)
        if why is not None:
            raise falcon.HTTPBadRequest(
                title="ambiguous path",
                description=f"the request path has {why}; send the canonical path "
                "(for example /v1/embeddings)",
            )

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: object, params: Any
    ) -> None:
        if resource is None:
            return  # no route: falcon answers 404
        listener = req.context.listener
        surface = ROUTE_SURFACES.get(req.uri_template or "")
        if surface is None or surface not in self.allowed(listener):
            hint = (
                f"; set EMBEDDER_TCP_EXPOSE={surface} to serve it"
                if listener == "tcp" and surface
                else ""
            )
            raise falcon.HTTPNotFound(
                title="not served here",
                description=f"{req.path} is not served on this listener ({listener}){hint}",
            )
