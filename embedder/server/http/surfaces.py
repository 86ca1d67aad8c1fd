"""Which listener a request came in on, what that listener may serve, and the API key.

The listener is told from the accepted socket gunicorn hands the app, failing closed
(`embedder.server.listeners.ListenerRules`): only the three sockets of the socket folder are
trusted; TCP and any other address get TCP's surfaces and EMBEDDER_API_KEY.

The surface is decided from the route the router matched (its URI template), never from the
raw path: the router ignores leading slashes and gunicorn decodes %2F, so `//rpc` and
`/%2Frpc` reach the /rpc resource while reading differently. Paths that can be read two ways
(empty or dot segments, encoded slashes) are refused outright with 400.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import falcon

from embedder.server.listeners import (
    ADMIN,
    EVERYTHING,
    HEALTH,
    METRICS,
    REST,
    RPC,
    Listener,
    ListenerRules,
)

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


# The routes' own paths, sent as they are: canonical, nothing to look into.
_CANONICAL = frozenset(t for t in ROUTE_SURFACES if "{" not in t)


def ambiguity(raw_target: str, path: str) -> str | None:
    """Why a request path can be read more than one way, or None when it is canonical.

    `raw_target` is the request target as sent (origin or absolute form), `path` the decoded
    path the router sees. One trailing slash is fine: falcon strips it."""
    if raw_target == path and path in _CANONICAL:
        return None
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
    """Falcon middleware: names the request's listener, refuses ambiguous paths, then (once the
    router has matched the route) requests without the API key where it applies, and routes
    the listener does not serve.

    `trust_in_process`: a request with no gunicorn socket comes from within the process
    (falcon.testing, tools) and is served everything; the service's own app turns it off, so
    under any other server such requests are served as TCP is."""

    def __init__(
        self,
        tcp_expose: Iterable[str] = (),
        *,
        socket_dir: Path | None = None,
        api_key: str | None = None,
        trust_in_process: bool = True,
    ) -> None:
        self.rules = ListenerRules(socket_dir, tcp_expose)
        self.key = api_key.encode() if api_key else None
        self.in_process = (
            Listener("direct", EVERYTHING, keyed=False)
            if trust_in_process
            else Listener("direct", self.rules.tcp, keyed=True)
        )

    def listener(self, env: dict[str, Any]) -> Listener:
        sock = env.get("gunicorn.socket")
        if sock is None:
            return self.in_process
        try:
            return self.rules.of(sock.getsockname())
        except OSError:
            return self.rules.of(None)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.door = door = self.listener(req.env)
        req.context.listener = door.name
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
        door: Listener = req.context.door
        surface = ROUTE_SURFACES.get(req.uri_template or "")
        if door.keyed and self.key is not None and surface != HEALTH:
            self._check_key(req)  # /health stays open: probes need no secret
        if surface is None or surface not in door.surfaces:
            hint = ""
            if door.keyed and surface:
                hint = f"; set EMBEDDER_TCP_EXPOSE={surface} to serve it"
            raise falcon.HTTPNotFound(
                title="not served here",
                description=f"{req.path} is not served on this listener ({door.name}){hint}",
            )

    def _check_key(self, req: falcon.Request) -> None:
        assert self.key is not None
        auth = req.get_header("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
            raise falcon.HTTPUnauthorized(
                title="unauthorized",
                description="a valid API key is required: Authorization: Bearer <key>",
                challenges=["Bearer"],
            )


def speaks_rpc(req: falcon.Request) -> bool:
    """Whether the request reached JSON-RPC: the /rpc route, on a listener that serves it.
    Its errors are then JSON-RPC error objects, whichever layer refused it."""
    door = getattr(req.context, "door", None)
    return (
        door is not None
        and RPC in door.surfaces
        and ROUTE_SURFACES.get(req.uri_template or "") == RPC
    )
