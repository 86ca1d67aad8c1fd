"""A peer's side of the peers' phase: a child process that loads one peer, warms it up, says
it is ready, then times what it is told to, one command at a time, so the benchmark can put
its rounds between everyone else's (alternate rounds: on a shared machine the ratio of
neighbouring rounds is what holds, not either figure alone).

Protocol: JSON lines. The child's first line is `{"ready": true, "load_s": ..., ...}` (or
`{"error": ...}`); then for each command on stdin one answer on stdout:
- `{"do": "round", "save": PATH|null, "every": N}` -> `{"texts_per_s", "seconds"}`: the whole
  corpus (or every N-th text) in one call, as a user of the peer would make it; the vectors
  saved as .npy (float32) if asked.
- `{"do": "singles", "count": N, "seconds": S}` -> `{"single_ms": [...]}`: the first N texts
  one call each (at least 4 of them; no new one past S seconds).
- `{"do": "quit"}`: the child exits.
A failed command answers `{"error": ...}`. Libraries that print to stdout cannot break the
protocol: the answers go to a private copy of stdout, and stdout itself to stderr.

Standard library and numpy only: the fastembed peer runs this in a virtual environment of
its own, where nothing else of the project is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np


class Encoder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors [len(texts), dims], any float dtype, in the caller's order."""
        ...


def arguments(prog: str, description: str | None) -> argparse.ArgumentParser:
    """The options every peer child takes (a child adds its own)."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--texts", required=True, type=Path, help="JSON list of texts")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=256)
    return ap


def _private_stdout() -> IO[str]:
    """A copy of stdout for the answers; stdout itself goes to stderr from here on."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    return out


def _say(out: IO[str], message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def singles(enc: Encoder, texts: Sequence[str], count: int, seconds: float) -> list[float]:
    until = time.perf_counter() + seconds
    took: list[float] = []
    for i, text in enumerate(texts[:count]):
        if i >= 4 and time.perf_counter() > until:
            break
        began = time.perf_counter()
        enc.encode([text])
        took.append((time.perf_counter() - began) * 1000)
    return took


def answer(enc: Encoder, texts: Sequence[str], msg: dict[str, Any]) -> dict[str, Any]:
    do = msg.get("do")
    if do == "round":
        some = texts[:: int(msg.get("every") or 1)]
        began = time.perf_counter()
        vectors = enc.encode(some)
        took = time.perf_counter() - began
        if msg.get("save"):
            np.save(str(msg["save"]), np.asarray(vectors, dtype=np.float32))
        return {"texts_per_s": len(some) / took if took else 0.0, "seconds": took}
    if do == "singles":
        return {"single_ms": singles(enc, texts, int(msg["count"]), float(msg["seconds"]))}
    return {"error": f"unknown command {do!r}"}


def serve(
    load: Callable[[], tuple[Encoder, dict[str, Any]]], texts: Sequence[str], warmup: int
) -> int:
    """Load (`load` returns the peer and what to say of it), warm up on `warmup` texts, then
    answer commands until told to quit or stdin closes."""
    out = _private_stdout()
    began = time.perf_counter()
    try:
        enc, info = load()
        enc.encode(list(texts[: max(1, warmup)]))
    except Exception as exc:  # the parent reports it and goes on without this peer
        traceback.print_exc()
        _say(out, {"error": f"loading failed: {exc!r}"[:500]})
        return 1
    _say(out, {"ready": True, "load_s": time.perf_counter() - began} | info)
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        if msg.get("do") == "quit":
            break
        try:
            reply = answer(enc, texts, msg)
        except Exception as exc:
            traceback.print_exc()
            reply = {"error": repr(exc)[:500]}
        _say(out, reply)
    return 0


def read_texts(path: Path) -> list[str]:
    texts = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise SystemExit(f"{path}: not a JSON list of texts")
    return texts
