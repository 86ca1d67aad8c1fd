"""Property tests over the request parsers: given any JSON value, each either returns a valid
value or raises a domain error (`EmbedderError`, which the API maps to a 4xx/503 or a JSON-RPC
code) — never anything else, which would surface as a 500 or -32603 "internal error".

The service here has no model loaded (it needs none to validate), so these run in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedder.catalog import STARTER
from embedder.errors import EmbedderError, InvalidInput, TooLarge
from embedder.limits import RequestLimits
from embedder.reranker import Doc
from embedder.server.http.errors import INTERNAL
from embedder.server.http.rerank import parse_documents
from embedder.server.http.rest import parse_input
from embedder.server.http.rpc import Dispatcher
from embedder.server.http.rpc_methods import build_methods, parse_docs
from embedder.service import Service
from embedder.store.files import ModelStore

pytestmark = pytest.mark.slow  # the inner loop (make quick) leaves these to make test

SETTINGS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Draw from each strategy in proportion to its weight (st.one_of gives each distinct
    strategy one share, so repeating a strategy in it changes nothing)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


# Any JSON value orjson can read back: 64-bit integers (larger ones arrive as floats), finite
# floats, strings with any code point JSON can carry.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=12,
)
TEXTS = (
    st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5)
    | st.lists(st.text(max_size=12), max_size=5)
    | st.text(max_size=12)
)
DOC_OBJECTS = st.lists(
    st.fixed_dictionaries({}, optional={"id": JSON, "text": st.text(max_size=12) | JSON}),
    max_size=4,
)
# What a caller plausibly sends, mixed with anything at all.
VALUES = JSON | TEXTS | DOC_OBJECTS | st.integers(min_value=-2, max_value=6)


def outcome(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), or the domain error it raised; any other exception fails the test."""
    try:
        return fn(*args)
    except EmbedderError as exc:
        assert exc.message and isinstance(exc.message, str)
        return exc


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> Service:
    """The starter catalog with nothing loaded, and small limits so TooLarge is reachable."""
    root = Path(tmp_path_factory.mktemp("cold-models"))
    return Service(
        STARTER,
        ModelStore(root, STARTER, offline=True),
        limits=RequestLimits(max_inputs=4, max_input_chars=8, max_docs=3, max_query_chars=8),
    )


@SETTINGS
@given(VALUES)
def test_parse_input(value: Any) -> None:
    got = outcome(parse_input, value)
    if isinstance(got, EmbedderError):
        assert isinstance(got, InvalidInput) and got.param == "input"
    else:
        assert got is value and value is not None


@SETTINGS
@given(VALUES, st.integers(min_value=1, max_value=1024))
def test_dimensions(cold: Service, value: Any, native: int) -> None:
    spec = replace(STARTER.default_embedding(), dims=native)
    got = outcome(cold.dimensions, spec, value)
    if isinstance(got, EmbedderError):
        assert isinstance(got, InvalidInput) and got.param == "dimensions"
    elif value is None:
        assert got is None
    else:
        assert type(got) is int and 1 <= got <= native and got == value


@SETTINGS
@given(VALUES)
def test_parse_documents(value: Any) -> None:
    got = outcome(parse_documents, value)
    if isinstance(got, EmbedderError):
        assert isinstance(got, InvalidInput) and got.param == "documents"
        return
    assert isinstance(got, list) and len(got) == len(value)
    for i, doc in enumerate(got):
        assert isinstance(doc, Doc) and doc.id == str(i) and isinstance(doc.text, str)


@SETTINGS
@given(VALUES)
def test_parse_docs(value: Any) -> None:
    got = outcome(parse_docs, value)
    if isinstance(got, EmbedderError):
        assert isinstance(got, InvalidInput) and got.param == "docs"
        return
    assert isinstance(got, list) and len(got) == len(value)
    for i, (doc, raw) in enumerate(zip(got, value, strict=True)):
        if isinstance(raw, str):  # a plain string: its position is its id
            assert (doc.id, doc.text) == (str(i), raw)
        else:
            assert isinstance(doc.id, str) and doc.id == str(raw["id"]) and doc.text == raw["text"]


@SETTINGS
@given(VALUES)
def test_validate_texts(cold: Service, value: Any) -> None:
    got = outcome(cold.validate_texts, value)
    if isinstance(got, EmbedderError):
        assert isinstance(got, InvalidInput | TooLarge) and got.param == "input"
        return
    assert isinstance(got, list) and 1 <= len(got) <= cold.limits.max_inputs
    assert all(isinstance(t, str) and 0 < len(t) <= cold.limits.max_input_chars for t in got)


# --- JSON-RPC: whole messages, shaped enough to reach every method's own validation ---------

METHOD_PARAMS: dict[str, tuple[str, ...]] = {
    "health": (),
    "status": (),
    "models.list": (),
    "models.describe": (),
    "mem_info": (),
    "ort_info": (),
    "rpc.discover": (),
    "embed": ("texts", "quality", "model", "query", "format"),
    "rerank": ("query", "docs", "top_k", "model", "raw"),
}
ANY_ID = st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5) | JSON


# Each param: mostly the right type (so validation goes deep), else anything.
PARAM_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "texts": TEXTS,
    "quality": st.integers(min_value=0, max_value=5),
    "model": st.sampled_from([s.id for s in STARTER] + [*STARTER.aliases, "nope"]),
    "query": st.text(max_size=10),
    "format": st.sampled_from(["compact", "float", "int8"]),
    "docs": st.lists(
        st.fixed_dictionaries({"id": st.integers(0, 3) | st.text(max_size=2), "text": st.text()}),
        max_size=4,
    )
    | DOC_OBJECTS,
    "top_k": st.integers(min_value=-1, max_value=5),
    "raw": st.booleans(),
}


def _well_formed(method: str) -> st.SearchStrategy[dict[str, Any]]:
    """A valid envelope for `method`; its params by name (known or not) or by position."""
    names = METHOD_PARAMS[method]
    values = {n: weighted((3, PARAM_VALUES[n]), (1, VALUES)) for n in names}
    required = {n: v for n, v in values.items() if n in ("texts", "query", "docs")}
    optional = {n: v for n, v in values.items() if n not in required}
    by_name = st.fixed_dictionaries(required, optional=optional)
    params = (
        by_name
        | st.lists(VALUES, max_size=len(names) + 1)
        | st.dictionaries(st.text(max_size=5), VALUES, max_size=2)
    )
    return st.fixed_dictionaries(
        {"jsonrpc": st.just("2.0"), "method": st.just(method)},
        optional={"params": params, "id": st.integers(-1000, 1000) | st.text(max_size=5)},
    )


# The two methods with params get most of the examples.
WELL_FORMED = st.sampled_from(["embed", "rerank"] * 3 + sorted(METHOD_PARAMS)).flatmap(_well_formed)
# Envelopes with anything in any field, including unknown methods.
ANY_MESSAGE = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0") | JSON, "method": st.sampled_from(["nope", "embed"]) | JSON},
    optional={"params": JSON, "id": ANY_ID},
)
BATCH = st.lists(WELL_FORMED | ANY_MESSAGE | JSON, min_size=1, max_size=4)
BODY = weighted((5, WELL_FORMED), (1, BATCH), (1, ANY_MESSAGE), (1, JSON))


def check_response(response: Any) -> None:
    """A JSON-RPC 2.0 response object that is not an internal error."""
    assert isinstance(response, dict) and response["jsonrpc"] == "2.0" and "id" in response
    assert ("result" in response) != ("error" in response), response
    if "error" in response:
        err = response["error"]
        assert isinstance(err["code"], int) and isinstance(err["message"], str)
        assert err["code"] != INTERNAL.rpc, err


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BODY)
def test_dispatcher_never_fails_internally(cold: Service, body: Any) -> None:
    dispatcher = Dispatcher(build_methods(cold))
    out = dispatcher.handle(body)
    orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)  # the resource can always send it
    if out is None:  # only notifications
        assert isinstance(body, dict | list)
        return
    for response in out if isinstance(out, list) else [out]:
        check_response(response)
