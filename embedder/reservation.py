"""Queue space held on a model before its rows are tokenised: what admission has let in and
counts, until a job takes it over or its holder gives it back."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedder.batcher import Batcher


class Reservation:
    """Queue space held on one model for rows still to come: `texts`, and their `cost`
    (`text_cost` units, estimated before they are tokenised), counted against admission from
    the moment they are reserved. Its holder hands it to the job that runs the rows (`run`:
    the job then holds the space until it is done) or gives it back; as a context manager it
    gives back whatever is left when the block ends, however it ends. `recheck`: the rows are
    admitted again on what they really cost once tokenised, when that is more than was held
    (a request of its own; an RPC batch is admitted once, as a whole); `mine` texts of the
    same request held beside it (its RPC batch's) do not make the model busy for them. Used
    by the thread of the request that made it."""

    def __init__(
        self, batcher: Batcher, texts: int, cost: float, *, recheck: bool, mine: int = 0
    ) -> None:
        self.batcher = batcher
        self.texts = texts
        self.cost = cost
        self.recheck = recheck
        self.mine = mine

    def take(self, texts: int, cost: float) -> Reservation:
        """Part of this space for one of the calls it was reserved for: `texts` of it and up to
        `cost` (all that is left with the last texts), admitted already."""
        if not 0 < texts <= self.texts:
            raise ValueError(f"cannot take {texts} of {self.texts} reserved texts")
        part = self.cost if texts == self.texts else min(cost, self.cost)
        self.texts -= texts
        self.cost -= part
        return Reservation(self.batcher, texts, part, recheck=False)

    def release(self) -> None:
        """Give back what is left (nothing once handed to a job, or given back already)."""
        texts, cost = self.texts, self.cost
        self.texts, self.cost = 0, 0.0
        if texts or cost:
            self.batcher._give_back(texts, cost)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
