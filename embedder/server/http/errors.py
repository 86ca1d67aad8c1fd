"""The one place where domain errors become HTTP statuses and JSON-RPC codes."""

from __future__ import annotations

from dataclasses import dataclass

from embedder import errors as e


@dataclass(frozen=True)
class Mapping:
    status: int  # HTTP status on REST
    type: str  # OpenAI error "type"
    code: str  # OpenAI error "code"
    rpc: int  # JSON-RPC error code


# JSON-RPC: -32602 invalid params for caller mistakes; application codes (-32000..-32099)
# for the service's own states.
RPC_NOT_READY = -32001
RPC_UNKNOWN_MODEL = -32002
RPC_MODEL_UNAVAILABLE = -32003
RPC_TOO_LARGE = -32004
RPC_OVERLOADED = -32005
RPC_DOWNLOAD = -32006
RPC_CLIENT_GONE = -32007  # never seen: nobody is there to read it
RPC_UNAUTHORIZED = -32008
RPC_REQUEST_TIMEOUT = -32009
RPC_MODEL_BROKEN = -32010
RPC_INVALID_REQUEST = -32600  # JSON-RPC 2.0's own

TABLE: dict[type[e.EmbedderError], Mapping] = {
    e.InvalidInput: Mapping(400, "invalid_request_error", "invalid_input", -32602),
    e.TooLarge: Mapping(413, "invalid_request_error", "too_large", RPC_TOO_LARGE),
    e.UnknownModel: Mapping(404, "invalid_request_error", "model_not_found", RPC_UNKNOWN_MODEL),
    e.NotReady: Mapping(503, "service_unavailable", "model_not_ready", RPC_NOT_READY),
    e.ModelUnavailable: Mapping(503, "server_error", "model_unavailable", RPC_MODEL_UNAVAILABLE),
    e.DownloadError: Mapping(503, "server_error", "model_download_failed", RPC_DOWNLOAD),
    e.BrokenModel: Mapping(503, "server_error", "model_broken", RPC_MODEL_BROKEN),
    e.Overloaded: Mapping(503, "service_unavailable", "overloaded", RPC_OVERLOADED),
    # nginx's 499: logged and counted in metrics; the client is not there to read it
    e.ClientGone: Mapping(499, "client_closed_request", "client_gone", RPC_CLIENT_GONE),
}

INTERNAL = Mapping(500, "server_error", "internal_error", -32603)


# Refusals made over HTTP before any JSON-RPC request is read (the API key, the HTTP method,
# the media type, a body that did not arrive): on /rpc they are JSON-RPC errors too, with
# these codes; any other status is an invalid request if it is the caller's (4xx), an
# internal error if it is the server's.
HTTP_RPC: dict[int, int] = {401: RPC_UNAUTHORIZED, 408: RPC_REQUEST_TIMEOUT}


def rpc_code(status: int) -> int:
    """The JSON-RPC error code of an HTTP refusal on /rpc."""
    if status in HTTP_RPC:
        return HTTP_RPC[status]
    return RPC_INVALID_REQUEST if status < 500 else INTERNAL.rpc


def mapping_for(exc: BaseException) -> Mapping:
    for cls in type(exc).__mro__:
        if cls in TABLE:
            return TABLE[cls]
    return INTERNAL


def retry_after(exc: BaseException) -> int | None:
    return getattr(exc, "retry_after", None)
