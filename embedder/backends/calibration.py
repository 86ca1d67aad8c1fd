"""The fixed calibration work a model's candidate runtimes are timed and checked on at load:
a batch of real sentences of mixed length, and one of them alone (a runtime may be faster on
batches and slower on a lone text, where latency is what counts), through the engine's own
steps (tokenizer, runner's run, pooling), so what is compared is what the service would
return, not raw graph output.

Small on purpose: timing stays within a few hundred ms per candidate even for the largest
levels on one core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from embedder.catalog import ModelSpec
from embedder.encoder import TextEncoder
from embedder.planning import RunLimits
from embedder.reranker import Doc, PairScorer

# A session -> its runs: "batch" (the calibration batch: pooled rows, or a logit per pair)
# and "lone" (its first text alone).
Runs = dict[str, Callable[[], np.ndarray]]
Probe = Callable[[Any], Runs]

TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to the email on my account?",
    "Photosynthesis turns light into chemical energy stored in glucose, releasing oxygen.",
    "Paris",
    "Der Zug nach München fährt um 14:35 von Gleis 7 ab.",
    "def add(a, b):\n    return a + b",
    "Interest rates rose for the third quarter in a row as inflation slowed.",
    "ok 👍 see you tomorrow",
)
QUERY = "what do plants make from sunlight?"


def embedding_probe(spec: ModelSpec, tokenizer: Tokenizer, limits: RunLimits) -> Probe:
    def probe(session: Any) -> Runs:
        encoder = TextEncoder(spec, session, tokenizer, limits)
        batch = encoder.tokenize(TEXTS)
        rows = np.arange(len(TEXTS))
        return {
            "batch": lambda: encoder.run_rows(batch, rows),
            "lone": lambda: encoder.run_rows(batch, rows[:1]),
        }

    return probe


def pair_probe(
    spec: ModelSpec, tokenizer: Tokenizer, tokenizer_longest: Tokenizer, limits: RunLimits
) -> Probe:
    docs = [Doc(str(i), t) for i, t in enumerate(TEXTS)]

    def probe(session: Any) -> Runs:
        scorer = PairScorer(spec, session, tokenizer, tokenizer_longest, limits)
        batch = scorer.tokenize(QUERY, docs)
        rows = np.arange(len(docs))
        return {
            "batch": lambda: scorer.run_rows(batch, rows),
            "lone": lambda: scorer.run_rows(batch, rows[:1]),
        }

    return probe
