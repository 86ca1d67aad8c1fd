"""The Python client: `Client` and the results and errors it returns (its public names).

`embedder.client.api` holds the client (its JSON-RPC calls), `rest` its REST calls over TCP,
`transport` the HTTP connections both use, `types` what it returns and raises, `unixhttp` the
HTTP connection over a unix socket (also used by the tools).

The package needs only the wire: the standard library and numpy, no other part of `embedder`,
and its modules import one another relatively and without a cycle, so it can be copied into
another project under any name.
"""

from .api import Client
from .types import (
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
