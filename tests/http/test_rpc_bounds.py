"""A JSON-RPC batch is one request: its texts in all count against the input limit and the
overload bound, notifications of embed and rerank do no work, and a client that has gone gets
no more work done for it."""

from __future__ import annotations

import socket
import threading
from typing import Any

import falcon.testing
import numpy as np
import orjson
import pytest

from embedder.encoder import TextEncoder
from embedder.server.http.errors import RPC_OVERLOADED, RPC_TOO_LARGE
from embedder.service import Service
from embedder.tokens import Tokenized
from tests.polling import PATIENCE, wait_until

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


def embed(texts: list[str], id: int | None = None, model: str = MODEL) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": "embed"}
    msg["params"] = {"texts": texts, "model": model}
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
    with batcher.reserve(held):
        before = texts_run(starter_service)
        out = rpc(client, [embed(["x"] * 8, i) for i in range(3)]).json  # 24 > 10 left
        assert isinstance(out, dict) and out["error"]["code"] == RPC_OVERLOADED
        assert out["error"]["data"]["retry_after"] >= 1
        assert texts_run(starter_service) == before
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


BUSY = "paraphrase-minilm-l3-v2"


def test_a_batch_refused_on_its_second_model_leaves_the_first_no_queue_space(
    client: falcon.testing.TestClient, starter_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch for two models, refused because the second one is busy: the queue space it had
    reserved on the first must come back. Before, it stayed reserved for good: three such
    batches left the first model refusing every request ("4096 texts are already queued")."""
    first, busy = starter_service.batchers[MODEL], starter_service.batchers[BUSY]
    encoder = starter_service.loader.embeddings[BUSY].encoder
    assert isinstance(encoder, TextEncoder)
    gate = threading.Event()
    real = encoder.run_rows

    def held(tok: Tokenized, rows: np.ndarray) -> np.ndarray:
        assert gate.wait(PATIENCE), "the test never opened the gate"
        return real(tok, rows)

    monkeypatch.setattr(encoder, "run_rows", held)
    # Filled by its text count, whatever rate earlier tests measured on this machine (by time,
    # a slow machine would refuse the second filler as overload and the queue never fill).
    monkeypatch.setattr(busy, "max_wait", 1e9)
    full = busy.max_queued_texts // 2
    spec = starter_service.resolve(BUSY)
    others = [
        threading.Thread(target=starter_service.embed, args=(["x"] * full, spec)) for _ in (1, 2)
    ]
    try:
        for t in others:  # one running (held at the gate), one queued behind it: queue full
            t.start()
        wait_until("the busy model's queue full", lambda: busy.queued_texts == 2 * full)
        for n in [first.max_queued_texts // 2 - 1] * 2 + [2]:  # 4096 texts for the first
            out = rpc(client, [embed(["x"] * n, 1), embed(["y"], 2, model=BUSY)]).json
            assert isinstance(out, dict) and out["error"]["code"] == RPC_OVERLOADED, out
        out = rpc(client, embed(["x"] * starter_service.limits.max_inputs, 3)).json
        assert "result" in out, f"the first model no longer serves: {out}"
        assert first.queued_texts == 0, "the refused batches left queue space reserved"
    finally:
        gate.set()
        for t in others:
            t.join(PATIENCE)
    wait_until("the busy model's queue empty", lambda: busy.queued_texts == 0)
    assert first.queued_texts == 0


RERANKER = "minilm-cosine-rerank"  # a cosine scorer: it queues on its embedding model's batcher
RUNS_ON = "all-minilm-l6-v2"


def rerank(docs: int, id: int | None = None, top_k: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": "rerank"}
    params = {"query": "a query", "docs": [f"doc {i}" for i in range(docs)], "model": RERANKER}
    msg["params"] = params | ({"top_k": top_k} if top_k is not None else {})
    if id is not None:
        msg["id"] = id
    return msg


def test_a_batch_of_reranks_on_a_busy_model_is_refused_whole_as_embeds_are(
    client: falcon.testing.TestClient, starter_service: Service
) -> None:
    """Each call fits in what the queue has left, the batch does not: refused as a whole before
    any work, as a batch of embed calls is. Before, only its document count was bounded: each
    call reserved on its own as it came, and all of them ran."""
    batcher = starter_service.batchers[RUNS_ON]
    left = 10
    with batcher.reserve(batcher.max_queued_texts - left):  # other clients' queued work
        before = batcher.stats.texts
        for calls in (
            [rerank(7, i) for i in range(3)],  # 8 texts each (the query and 7 documents)
            [embed(["x"] * 8, 0, model=RUNS_ON), rerank(7, 1)],  # both on the same model
        ):
            out = rpc(client, calls).json
            assert isinstance(out, dict) and out["error"]["code"] == RPC_OVERLOADED, out
            assert out["id"] is None and out["error"]["data"]["retry_after"] >= 1
            assert batcher.stats.texts == before, "no call ran"
        assert batcher.queued_texts == batcher.max_queued_texts - left
        out = rpc(client, [rerank(3, 1), rerank(3, 2)]).json  # 8 texts in all: admitted whole
        assert [o["id"] for o in out] == [1, 2] and all("result" in o for o in out), out
        assert batcher.queued_texts == batcher.max_queued_texts - left, "the batch gave it back"
    out = rpc(client, [rerank(7, i) for i in range(3)]).json
    assert [o["id"] for o in out] == [0, 1, 2]
    assert batcher.queued_texts == 0


def test_the_reranks_reservation_is_given_back_on_every_path(
    client: falcon.testing.TestClient, starter_service: Service
) -> None:
    batcher = starter_service.batchers[RUNS_ON]
    out = rpc(client, [rerank(4, 1, top_k=0), rerank(4, 2), embed(["x"], 3, model=RUNS_ON)]).json
    assert "error" in out[0] and "result" in out[1] and "result" in out[2], out
    assert batcher.queued_texts == 0, "a call that failed left its part reserved"
    here, there = socket.socketpair()
    there.close()  # the client hung up after sending its batch
    try:
        before = batcher.stats.texts
        r = rpc(client, [rerank(4, 1), rerank(4, 2)], {"gunicorn.socket": here})
        assert r.content in (b"", b"null") or r.status_code >= 400
        assert batcher.stats.texts == before and batcher.queued_texts == 0
    finally:
        here.close()
