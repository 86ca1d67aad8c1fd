"""One model's load state in a worker, and how failures are told: a cause several models share
(a Hub that cannot be reached) is said once, under a key each model's error refers to.

A state is a frozen snapshot: the loader thread replaces a model's whole `ModelStatus` (one
dict assignment) rather than changing its fields, so a request thread that takes a model's
status reads one consistent state, never a "ready" next to an old error, or a retry time
cleared between its check and its use."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from embedder.backends.choice import Runtime
from embedder.errors import EmbedderError

log = logging.getLogger("embedder.service")

State = Literal["pending", "downloading", "loading", "ready", "error"]
# How far along a state is; across workers a model shows its least advanced state.
ORDER = {"error": 0, "pending": 1, "downloading": 2, "loading": 3, "ready": 4}


@dataclass(frozen=True)
class ModelStatus:
    state: State = "pending"
    error: str | None = None  # this model's part of the story
    cause: str | None = None  # why, and what to do: shared by the models that failed alike
    load_seconds: float | None = None
    started: float | None = None
    retry: bool = False  # failed to download: tried again later
    retry_at: float | None = None  # time.time() of the next try
    broken: bool = False  # it computed NaN or Inf (`mark_broken`)
    runtime: Runtime | None = None  # what computes it, once loaded

    def failed(self, exc: EmbedderError, *, retry: bool) -> ModelStatus:
        """This state after a domain error; its `cause` detail (if any) is kept apart from its
        own part."""
        cause = exc.details.get("cause")
        error = exc.details.get("summary") if cause else exc.message
        return replace(self, state="error", error=error, cause=cause, retry=retry)

    def retry_after(self) -> int | None:
        """Whole seconds (at least 1) until a scheduled retry; None when none is."""
        if not (self.retry and self.retry_at):
            return None
        return max(1, round(self.retry_at - time.time()))


_marking = threading.Lock()


def mark_broken(statuses: dict[str, ModelStatus], model: str, exc: EmbedderError) -> bool:
    """Mark a served model failed for computing NaN or Inf (`errors.BrokenModel`), replacing its
    state whole as the loader does. True for the one call that did so, which logs it; False
    when the model was failed already."""
    with _marking:
        st = statuses.get(model)
        if st is None or st.state == "error":
            return False
        statuses[model] = replace(
            st,
            state="error",
            error=exc.message,
            cause=None,
            broken=True,
            retry=False,
            retry_at=None,
        )
    log.error("model %s failed: %s", model, exc.message)
    return True


def keyed_causes(statuses: Iterable[ModelStatus]) -> dict[str, str]:
    """Cause text -> its key in `failures` (download, download-2, ...), in model order."""
    out: dict[str, str] = {}
    for s in statuses:
        if s.state == "error" and s.cause and s.cause not in out:
            out[s.cause] = "download" if not out else f"download-{len(out) + 1}"
    return out


def error_text(st: ModelStatus, keys: dict[str, str]) -> str | None:
    """The model's own part, and where its shared cause is said."""
    if st.error is None or st.cause is None:
        return st.error
    return f"{st.error} (why, and what to do: /health failures.{keys[st.cause]})"


def report(statuses: dict[str, ModelStatus]) -> dict[str, Any]:
    """The `errors`, `failures` and `retry_in` fields of a health answer (only those that apply)."""
    keys = keyed_causes(statuses.values())
    out: dict[str, Any] = {}
    errors = {i: error_text(s, keys) for i, s in statuses.items() if s.state == "error"}
    if errors:
        out["errors"] = errors
    if keys:
        out["failures"] = {key: cause for cause, key in keys.items()}
    retry_at = [s.retry_at for s in statuses.values() if s.retry and s.retry_at]
    if retry_at:
        out["retry_in"] = max(0, round(min(retry_at) - time.time()))
    return out


class FailureLog:
    """Logs each model's own part, and a cause shared by several models once per round of
    tries (the first load, each retry): five models without a Hub log the advice once."""

    def __init__(self) -> None:
        self._said: set[str] = set()

    def new_round(self) -> None:
        self._said.clear()

    def log(self, model: str, st: ModelStatus) -> None:
        if st.cause is None:
            log.error("model %s failed: %s", model, st.error)
        elif st.cause in self._said:
            log.error("model %s failed: %s (same cause as above)", model, st.error)
        else:
            self._said.add(st.cause)
            log.error("model %s failed: %s: %s", model, st.error, st.cause)
