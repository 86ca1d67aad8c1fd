"""create_app: the falcon application over a Service (as in falcon's `look` example)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import falcon

from embedder.errors import EmbedderError
from embedder.server.http.access import RequestLog
from embedder.server.http.admin import ADMIN_STATIC, add_admin_routes
from embedder.server.http.body import BodyLimits, BodyReader, dumps
from embedder.server.http.deadline import Watchdog
from embedder.server.http.errors import INTERNAL, mapping_for, retry_after, rpc_code
from embedder.server.http.gone import ClientWatch
from embedder.server.http.metrics import Metrics, MetricsMiddleware, MetricsResource
from embedder.server.http.openapi import OpenApiResource
from embedder.server.http.rerank import RerankResource
from embedder.server.http.rest import EmbeddingsResource, HealthResource, ModelsResource
from embedder.server.http.routing import HeadRouter
from embedder.server.http.rpc import Dispatcher, RpcResource, refusal
from embedder.server.http.rpc_methods import admit_batch, build_methods
from embedder.server.http.surfaces import ListenerGuard, speaks_rpc
from embedder.service import Service

log = logging.getLogger("embedder.server.http")


@dataclass(frozen=True)
class HttpOptions:
    max_body_bytes: int = 16 * 1024 * 1024
    body_timeout: float = 30.0
    tcp_expose: tuple[str, ...] = ()
    api_key: str | None = None
    # The service's socket folder: its three sockets are known by their full path there.
    socket_dir: Path | None = None
    # Requests with no gunicorn socket (falcon.testing, tools) served everything, unkeyed.
    trust_in_process: bool = True
    master_pid: int | None = None
    access_log: bool = False  # JSON lines on the embedder.access logger
    admin_static: Path = ADMIN_STATIC


def _error(
    req: falcon.Request,
    resp: falcon.Response,
    status: int,
    message: str,
    etype: str,
    code: str,
    param: Any = None,
    rpc: int | None = None,
) -> None:
    """An error answer in OpenAI's shape; where the request reached JSON-RPC, a JSON-RPC error
    object instead (code `rpc`, else the status's), whichever layer refused it."""
    resp.status = falcon.code_to_http_status(status)
    resp.content_type = falcon.MEDIA_JSON
    if speaks_rpc(req):
        data = {"code": code, "param": param} if param else {"code": code}
        resp.data = dumps(refusal(rpc_code(status) if rpc is None else rpc, message, data))
        return
    resp.data = dumps({"error": {"message": message, "type": etype, "param": param, "code": code}})


def _domain_error(req: falcon.Request, resp: falcon.Response, exc: Exception, params: Any) -> None:
    assert isinstance(exc, EmbedderError)
    m = mapping_for(exc)
    _error(req, resp, m.status, exc.message, m.type, m.code, exc.param, m.rpc)
    after = retry_after(exc)
    if after is not None:
        resp.set_header("Retry-After", str(after))


def _http_error(req: falcon.Request, resp: falcon.Response, exc: Exception, params: Any) -> None:
    assert isinstance(exc, falcon.HTTPError)
    status = int(str(exc.status).split(" ", 1)[0])
    message = exc.description or exc.title or "error"
    code = (exc.title or "error").lower().replace(" ", "_")
    etype = "invalid_request_error" if status < 500 else "server_error"
    _error(req, resp, status, message, etype, code)
    if exc.headers:
        resp.set_headers(exc.headers)


def _unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params: Any) -> None:
    log.exception("unhandled error on %s %s", req.method, req.path)
    _error(req, resp, INTERNAL.status, "internal error", INTERNAL.type, INTERNAL.code)


def create_app(
    service: Service,
    options: HttpOptions | None = None,
    *,
    metrics: Metrics | None = None,
    watchdog: Watchdog | None = None,
) -> falcon.App[Any, Any]:
    """The app over `service`. Its collaborators with threads come from the caller, who owns
    them and can close them (gunicorn's bootstrap makes one set per worker, kept for the
    worker's life). Left out, the app makes its own: metrics without a refresh thread (a
    scrape refreshes them; no other process reads them) and a watchdog whose thread starts
    only with a body read from a real socket."""
    opts = options or HttpOptions()
    m = metrics or Metrics()
    m.observe(service)
    middleware: list[Any] = [
        RequestLog(opts.access_log),
        ListenerGuard(
            opts.tcp_expose,
            socket_dir=opts.socket_dir,
            api_key=opts.api_key,
            trust_in_process=opts.trust_in_process,
        ),
        ClientWatch(),
        MetricsMiddleware(m),
    ]
    app = falcon.App(middleware=middleware, router=HeadRouter())
    app.req_options.strip_url_path_trailing_slash = True
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(falcon.HTTPError, _http_error)
    app.add_error_handler(EmbedderError, _domain_error)

    reader = BodyReader(BodyLimits(opts.max_body_bytes, opts.body_timeout), watchdog or Watchdog())
    embeddings = EmbeddingsResource(service, reader)
    models = ModelsResource(service)
    app.add_route("/v1/embeddings", embeddings)
    app.add_route("/embeddings", embeddings)
    app.add_route("/v1/models", models)
    app.add_route("/v1/models/{model_id}", models, suffix="one")
    rerank = RerankResource(service, reader)
    app.add_route("/v1/rerank", rerank)
    app.add_route("/v2/rerank", rerank)
    app.add_route("/rerank", rerank)
    app.add_route("/health", HealthResource(service))
    app.add_route("/openapi.json", OpenApiResource())
    app.add_route("/metrics", MetricsResource(service, m))
    dispatcher = Dispatcher(build_methods(service, opts.master_pid), admit_batch(service))
    app.add_route("/rpc", RpcResource(dispatcher, reader))
    add_admin_routes(app, opts.admin_static)
    return app
