"""`embedder embed`, `embedder rerank` and the parts of `embedder status` that ask a running
instance: smoke tests from a shell, over the unix socket by default or TCP with `--url`.

They go through the Python client, so they reach the service the way a program would: JSON-RPC
on rpc.sock, REST on a TCP URL (what TCP serves by default).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from embedder.client import Client, EmbedResult, Health
from embedder.client.transport import default_socket

OK, FAILURE, NOT_READY = 0, 1, 4
SHOWN = 4  # components of each vector printed (the rest: --json)


def add_target(parser: argparse.ArgumentParser) -> None:
    """The options that say which instance to ask."""
    parser.add_argument("--socket", type=Path, help="rpc.sock (default: from PATH_SOCKETS)")
    parser.add_argument(
        "--url", help="http://host:port: TCP instead (the key, if any: EMBEDDER_API_KEY)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--json", action="store_true", help="the whole answer as JSON")


def client_for(args: argparse.Namespace, env: Mapping[str, str]) -> Client:
    if args.url:
        return Client(url=args.url, timeout=args.timeout, api_key=env.get("EMBEDDER_API_KEY"))
    return Client(args.socket or default_socket("rpc.sock", env), timeout=args.timeout)


def embed(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with client_for(args, env) as client:
        got = client.embed(args.texts, quality=args.quality, model=args.model, query=args.query)
        address = client.address
    if args.json:
        print(json.dumps(_embed_json(got)))
        return OK
    level = f" (level {got.quality})" if got.quality is not None else ""
    print(
        f"{got.model}{level}: {len(args.texts)} texts, {got.dims} dims, {got.tokens} tokens, "
        f"via {address}"
    )
    for i, (text, vector) in enumerate(zip(args.texts, got.vectors, strict=True)):
        head = " ".join(f"{x:+.4f}" for x in vector[:SHOWN])
        more = " ..." if len(vector) > SHOWN else ""
        norm = float(np.linalg.norm(vector))
        tokens = f"  {got.token_counts[i]} tokens" if got.token_counts else ""
        print(f"{i}  [{head}{more}]  norm {norm:.3f}{tokens}  {_clip(text)}")
    return OK


def rerank(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    with client_for(args, env) as client:
        hits = client.rerank(
            args.query, args.docs, top_k=args.top_k, model=args.model, raw=args.raw
        )
    if args.json:
        print(json.dumps([asdict(h) for h in hits]))
        return OK
    print(f"{'rank':<5} {'score':>8}  {'doc':<4} text")
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:<5} {hit.score:>8.4f}  {hit.index:<4} {_clip(args.docs[hit.index])}")
    return OK


def health_only(client: Client, as_json: bool) -> int:
    """`status` over a TCP listener that serves REST only (the default): its /health."""
    health = client.health()
    if as_json:
        print(json.dumps(asdict(health)))
    else:
        print(_health_line(health, client.address))
        for model, error in health.errors.items():
            print(f"error {model}: {error}")
        print(
            "(this listener serves REST only, so no per-model details: ask over the unix "
            "socket, or set EMBEDDER_TCP_EXPOSE=rpc on the server)"
        )
    return {"ok": OK, "starting": NOT_READY}.get(health.status, FAILURE)


def _health_line(health: Health, address: str) -> str:
    loaded = ", ".join(health.models_loaded) or "none"
    return f"{health.status}: models ready: {loaded}; via {address}"


def _embed_json(got: EmbedResult) -> dict[str, Any]:
    return {
        "model": got.model,
        "quality": got.quality,
        "dimensions": got.dims,
        "tokens": got.tokens,
        "token_counts": list(got.token_counts),
        "embeddings": got.vectors.tolist(),
    }


def _clip(text: str, width: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."
