"""The Python client: `Client` and the results and errors it returns (its public names).

`embedder.client.api` holds the client, `rest` its REST calls over TCP, `types` what it returns
and raises, `unixhttp` the HTTP connection over a unix socket (also used by the tools).
"""

from embedder.client.api import Client
from embedder.client.types import (
    ClientError,
    CompactEmbedResult,
    EmbedResult,
    Health,
    HttpError,
    InvalidParamsError,
    ModelInfo,
    NotReadyError,
    RerankHit,
    RpcError,
    ServiceTimeout,
    ServiceUnreachable,
    Status,
    UnknownModelError,
)

__all__ = [
    "Client",
    "ClientError",
    "CompactEmbedResult",
    "EmbedResult",
    "Health",
    "HttpError",
    "InvalidParamsError",
    "ModelInfo",
    "NotReadyError",
    "RerankHit",
    "RpcError",
    "ServiceTimeout",
    "ServiceUnreachable",
    "Status",
    "UnknownModelError",
]
