"""The cells and tables every section of the Markdown report is made of."""

from __future__ import annotations

from collections.abc import Sequence


def table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    def cell(v: object) -> str:
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return [*lines, ""]


def section(
    out: list[str], head: Sequence[str], rows: Sequence[Sequence[object]], note: str
) -> list[str]:
    """A section that ends with its table and the note on how to read it (then a blank)."""
    return [*out, *table(head, rows), note, ""]


def num(v: object, digits: int = 1) -> str | None:
    return None if not isinstance(v, int | float) else f"{v:.{digits}f}"


def num_pair(a: object, b: object, digits: int = 2) -> str | None:
    """`a / b`, `a` alone when `b` is missing (results saved before it was measured)."""
    first, second = num(a, digits), num(b, digits)
    if first is None:
        return None
    return first if second is None else f"{first} / {second}"


def pct(v: object) -> str | None:
    return None if not isinstance(v, int | float) else f"{v * 100:.0f}%"


def others(share: object) -> str | None:
    """Other processes' share of the machine meanwhile; flagged when it may skew the row."""
    if not isinstance(share, int | float):
        return None
    return f"{share * 100:.0f}%" + (" (!)" if share > 0.25 else "")


def median_of(d: dict[str, float]) -> float:
    values = sorted(d.values())
    n = len(values)
    return (values[n // 2] + values[(n - 1) // 2]) / 2 if n else 0.0
