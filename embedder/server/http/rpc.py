"""JSON-RPC 2.0 on POST /rpc: batches, notifications, standard and application error codes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import falcon

from embedder import work
from embedder.errors import EmbedderError, InvalidInput, TooLarge
from embedder.server.http.body import BodyReader, dumps
from embedder.server.http.errors import INTERNAL, mapping_for

log = logging.getLogger("embedder.rpc")

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
MAX_BATCH = 100


@dataclass(frozen=True)
class Param:
    name: str
    schema: dict[str, Any]
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Method:
    name: str
    func: Callable[..., Any]
    summary: str
    params: tuple[Param, ...] = ()
    result: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    # Its only product is its result (embed, rerank): as a notification it has nothing to do.
    result_only: bool = False


# The calls of a batch that will run, (method, bound params) -> a context they run in, which
# admits them as one request (or raises an EmbedderError that refuses the whole batch).
BatchAdmission = Callable[[list[tuple[str, dict[str, Any]]]], AbstractContextManager[None]]


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def _error(req_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "error": err, "id": req_id}


def refusal(code: int, message: str, data: Any = None) -> dict[str, Any]:
    """The answer to a request refused before its JSON-RPC id could be read (id null)."""
    return _error(None, code, message, data)


def _bind(method: Method, params: Any) -> dict[str, Any]:
    names = [p.name for p in method.params]
    if params is None:
        kwargs: dict[str, Any] = {}
    elif isinstance(params, list):
        if len(params) > len(names):
            raise RpcError(INVALID_PARAMS, f"{method.name} takes at most {len(names)} params")
        kwargs = dict(zip(names, params, strict=False))
    elif isinstance(params, dict):
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise RpcError(INVALID_PARAMS, f"{method.name}: unknown params {unknown}")
        kwargs = dict(params)
    else:
        raise RpcError(INVALID_PARAMS, "params must be an array or an object")
    missing = [p.name for p in method.params if p.required and p.name not in kwargs]
    if missing:
        raise RpcError(INVALID_PARAMS, f"{method.name}: missing params {missing}")
    return kwargs


def _valid_id(x: Any) -> bool:
    return (
        x is None or isinstance(x, str) or (isinstance(x, int | float) and not isinstance(x, bool))
    )


def _domain_error(req_id: Any, exc: EmbedderError) -> dict[str, Any]:
    m = mapping_for(exc)
    data: dict[str, Any] = {"type": type(exc).__name__, "code": m.code}
    if exc.param:
        data["param"] = exc.param
    retry = getattr(exc, "retry_after", None)
    if retry is not None:
        data["retry_after"] = retry
    return _error(req_id, m.rpc, exc.message, data)


def _admit_all(calls: list[tuple[str, dict[str, Any]]]) -> AbstractContextManager[None]:
    return contextlib.nullcontext()


class Dispatcher:
    def __init__(self, methods: list[Method], admit: BatchAdmission = _admit_all) -> None:
        self.methods = {m.name: m for m in methods}
        self.admit = admit

    def call(self, msg: Any) -> dict[str, Any] | None:
        """One request object -> its response, or None for a notification."""
        if not isinstance(msg, dict):
            return _error(None, INVALID_REQUEST, "a request must be a JSON object")
        notification = "id" not in msg
        req_id = msg.get("id")
        if not _valid_id(req_id):
            return _error(None, INVALID_REQUEST, "id must be a string, a number or null")
        if msg.get("jsonrpc") != "2.0":
            return _error(req_id, INVALID_REQUEST, 'jsonrpc must be exactly "2.0"')
        name = msg.get("method")
        if not isinstance(name, str):
            return _error(req_id, INVALID_REQUEST, "method must be a string")
        method = self.methods.get(name)
        if notification and method is not None and method.result_only:
            return None  # nobody will read the result, and producing it is all it does
        try:
            if method is None:
                raise RpcError(METHOD_NOT_FOUND, f"method not found: {name}")
            result = method.func(**_bind(method, msg.get("params")))
        except RpcError as exc:
            response = _error(req_id, exc.code, exc.message, exc.data)
        except EmbedderError as exc:
            response = _domain_error(req_id, exc)
        except Exception:
            log.exception("rpc method %s failed", name)
            response = _error(req_id, INTERNAL.rpc, "internal error")
        else:
            response = {"jsonrpc": "2.0", "result": result, "id": req_id}
        return None if notification else response

    def handle(self, body: Any) -> Any:
        """A parsed body -> the response body (None when nothing is owed)."""
        if isinstance(body, list):
            if not body:
                return _error(None, INVALID_REQUEST, "empty batch")
            if len(body) > MAX_BATCH:
                return _error(None, INVALID_REQUEST, f"batch over {MAX_BATCH} requests")
            try:
                with self.admit(self._work(body)):
                    out = []
                    for msg in body:
                        if work.current().client_gone():
                            return None  # the rest is dropped: nobody is there to read it
                        r = self.call(msg)
                        if r is not None:
                            out.append(r)
            except EmbedderError as exc:  # refused as a whole, like one request over a bound
                return _domain_error(None, exc)
            return out or None
        return self.call(body)

    def _work(self, body: list[Any]) -> list[tuple[str, dict[str, Any]]]:
        """The calls of a batch that will run, with their params bound (the others fail or
        are skipped on their own)."""
        calls = []
        for msg in body:
            name = msg.get("method") if isinstance(msg, dict) else None
            method = self.methods.get(name) if isinstance(name, str) else None
            if method is None or ("id" not in msg and method.result_only):
                continue
            try:
                calls.append((method.name, _bind(method, msg.get("params"))))
            except RpcError:
                continue
        return calls


class RpcResource:
    def __init__(self, dispatcher: Dispatcher, reader: BodyReader) -> None:
        self.dispatcher = dispatcher
        self.reader = reader

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            body = self.reader.json(req)
        except TooLarge as exc:
            m = mapping_for(exc)
            out: Any = _error(None, m.rpc, exc.message)
            resp.status = falcon.HTTP_413
        except InvalidInput as exc:
            out = _error(None, PARSE_ERROR, f"parse error: {exc.message}")
        else:
            out = self.dispatcher.handle(body)
        if out is None:
            resp.status = falcon.HTTP_204
            return
        resp.data = dumps(out)
        resp.content_type = falcon.MEDIA_JSON
