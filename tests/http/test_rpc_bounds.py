"""A JSON-RPC batch is one request: its texts in all count against the input limit and the
overload bound, notifications of embed and rerank do no work, and a client that has gone gets
no more work done for it."""

from __future__ import annotations

import socket
from typing import Any

import falcon.testing
import orjson

from embedder.server.http.errors import RPC_OVERLOADED, RPC_TOO_LARGE
from embedder.service import Service

MODEL = "all-minilm-l6-v2-int8"


def rpc(
    client: falcon.testing.TestClient, body: Any, env: dict[str, Any] | None = None
) -> falcon.testing.Result:
    return client.simulate_post(
        "/rpc",
        body=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
        extras=env or {},
    )


def embed(texts: list[str], id: int | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": "embed"}
    msg["params"] = {"texts": texts, "model": MODEL}
    if id is not None:
        msg["id"] = id
    return msg


def texts_run(service: Service) -> int:
    return service.batchers[MODEL].stats.texts


def test_a_batch_over_the_input_limit_is_refused_whole_before_any_work(
    client: falcon.testing.TestClient, starter_service: Service
) -> None:
    limit = starter_service.limits.max_inputs
    half = ["x"] * (limit // 2 + 1)  # each call is within the limit, the two are not
    before = texts_run(starter_service)
    out = rpc(client, [embed(half, 1), embed(half, 2)]).json
    assert isinstance(out, dict), "one error for the whole batch, like one request too large"
    assert out["error"]["code"] == RPC_TOO_LARGE and out["id"] is None
    assert str(limit) in out["error"]["message"]
    assert texts_run(starter_service) == before


def test_notifications_of_embed_and_rerank_do_no_work(
    client: falcon.testing.TestClient, starter_service: Service
) -> None:
    before = texts_run(starter_service)
    rerank = {
        "jsonrpc": "2.0",
        "method": "rerank",
        "params": {"query": "q", "docs": [{"id": 1, "text": "d"}]},
    }
    r = rpc(client, [embed(["a", "b"]), embed(["c"]), rerank])
    assert r.status_code == 204 and r.content == b""
    r = rpc(client, embed(["single"]))
    assert r.status_code == 204
    assert texts_run(starter_service) == before
    # A call with an id in the same batch still runs, and is the only one that does.
    out = rpc(client, [embed(["a", "b"]), embed(["c"], 7)]).json
    assert [o["id"] for o in out] == [7] and "result" in out[0]
    assert texts_run(starter_service) == before + 1


def test_an_overloaded_queue_refuses_the_batch_as_a_whole(
    client: falcon.testing.TestClient, starter_service: Service
) -> None:
    batcher = starter_service.batchers[MODEL]
    held = batcher.max_queued_texts - 10  # stands for other clients' queued work
    batcher.reserve(held)
    try:
        before = texts_run(starter_service)
        out = rpc(client, [embed(["x"] * 8, i) for i in range(3)]).json  # 24 > 10 left
        assert isinstance(out, dict) and out["error"]["code"] == RPC_OVERLOADED
        assert out["error"]["data"]["retry_after"] >= 1
        assert texts_run(starter_service) == before
    finally:
        batcher.release(held)
    # With the queue free again the same batch runs, and leaves no reservation behind.
    out = rpc(client, [embed(["x"] * 8, i) for i in range(3)]).json
    assert [o["id"] for o in out] == [0, 1, 2]
    assert batcher.queued_texts == 0


def test_a_batch_stops_when_its_client_has_gone(
    client: falcon.testing.TestClient, starter_service: Service
) -> None:
    here, there = socket.socketpair()
    there.close()  # the client hung up after sending its batch
    try:
        before = texts_run(starter_service)
        r = rpc(client, [embed(["a"], 1), embed(["b"], 2)], {"gunicorn.socket": here})
        assert r.content in (b"", b"null") or r.status_code >= 400
        assert texts_run(starter_service) == before
    finally:
        here.close()
