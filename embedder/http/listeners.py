"""Which listener a request came in on, and what each listener may serve.

TCP may face an overlay network with no auth, so it serves only the OpenAI REST API and
/health unless more is asked for (EMBEDDER_TCP_EXPOSE); each unix socket serves its own part.
"""

from __future__ import annotations

import socket
from typing import Any

import falcon

REST, RPC, ADMIN, METRICS, HEALTH = "rest", "rpc", "admin", "metrics", "health"

SOCKET_SURFACES: dict[str, frozenset[str]] = {
    "rest.sock": frozenset({REST, HEALTH, METRICS}),
    "rpc.sock": frozenset({RPC, HEALTH, METRICS}),
    "admin.sock": frozenset({ADMIN, RPC, REST, HEALTH, METRICS}),
}
TCP_SURFACES = frozenset({REST, HEALTH})
EVERYTHING = frozenset({REST, RPC, ADMIN, METRICS, HEALTH})


def surface_of(path: str) -> str:
    if path == "/health":
        return HEALTH
    if path == "/rpc":
        return RPC
    if path == "/metrics":
        return METRICS
    if path == "/" or path.startswith(("/static/", "/admin")):
        return ADMIN
    return REST


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


class ListenerGuard:
    """Falcon middleware: refuses routes that the request's listener does not serve."""

    def __init__(self, tcp_expose: frozenset[str] | set[str] | tuple[str, ...] = ()) -> None:
        self.tcp = TCP_SURFACES | frozenset(tcp_expose)

    def allowed(self, listener: str) -> frozenset[str]:
        if listener == "tcp":
            return self.tcp
        return SOCKET_SURFACES.get(listener, EVERYTHING)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        listener = listener_of(req.env)
        req.context.listener = listener
        surface = surface_of(req.path)
        if surface not in self.allowed(listener):
            hint = f"; set EMBEDDER_TCP_EXPOSE={surface} to serve it" if listener == "tcp" else ""
            raise falcon.HTTPNotFound(
                title="not served here",
                description=f"{req.path} is not served on this listener ({listener}){hint}",
            )
