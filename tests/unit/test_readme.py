"""The README is for users: short, and its tables say what the code does.

Its listener table is checked against the surface table the server enforces, and its
configuration table against the variables `Settings.from_env` reads, so neither drifts from
the code (the listener table once left out rerank, /metrics and /openapi.json).
"""

from __future__ import annotations

import re
from pathlib import Path

from embedder.server.http.surfaces import ROUTE_SURFACES
from embedder.server.listeners import SOCKET_SURFACES, TCP_SURFACES
from embedder.settings import RETIRED, Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
# Read by Settings but set by the service for its own workers (or by the system), not by hand.
INTERNAL = {"EMBEDDER_WORKER_BOARD", "PROMETHEUS_MULTIPROC_DIR", "XDG_CACHE_HOME"}


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows[1:]]  # without the head


def paths_in(cell: str) -> set[str]:
    return set(re.findall(r"`(/[^`]*)`", cell))


def served(surfaces: frozenset[str]) -> set[str]:
    """The fixed routes (no templates) a listener serves, the dashboard's aside."""
    return {
        route
        for route, surface in ROUTE_SURFACES.items()
        if surface in surfaces and "{" not in route and route != "/"
    }


def test_the_readme_stays_short() -> None:
    assert len(README.splitlines()) <= 400


def test_the_listener_table_is_what_each_listener_serves() -> None:
    rows = {r[0]: r[1] for r in table_rows(section("Using it").split("### REST")[0])}
    by_name = {
        next(k for k in rows if k.startswith(f"`$PATH_SOCKETS/hero_embedder_provider/{n}`")): n
        for n in SOCKET_SURFACES
    }
    for key, name in by_name.items():
        if name == "admin.sock":
            continue
        assert paths_in(rows[key]) == served(SOCKET_SURFACES[name]), name
    tcp = next(k for k in rows if k.startswith("TCP"))
    assert paths_in(rows[tcp]) == served(TCP_SURFACES)
    admin = next(k for k, n in by_name.items() if n == "admin.sock")
    assert "everything rest.sock and rpc.sock serve" in rows[admin]
    both = SOCKET_SURFACES["rest.sock"] | SOCKET_SURFACES["rpc.sock"]
    assert both <= SOCKET_SURFACES["admin.sock"]


class _Recorder(dict[str, str]):
    """An empty environment that notes every variable asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.asked.add(key)
        return default


def _settings() -> set[str]:
    env = _Recorder()
    Settings.from_env(env)
    return env.asked - INTERNAL


def test_the_configuration_table_has_one_line_per_setting() -> None:
    names = [r[0].strip("`") for r in table_rows(section("Configuration"))]
    assert len(names) == len(set(names)), "a variable listed twice"
    assert set(names) == _settings()


def test_the_full_configuration_lists_every_setting_and_those_that_went() -> None:
    """docs/configuration.md: its table of settings is what `Settings.from_env` reads (a row
    may name several), and its table of settings that went is what the service warns of."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    current, went = text.split("\n## Settings that went\n")
    named = [n for r in table_rows(current) for n in re.findall(r"`([A-Z0-9_]+)`", r[0])]
    assert len(named) == len(set(named)), "a variable listed twice"
    assert set(named) == _settings()
    gone = {n for r in table_rows(went) for n in re.findall(r"`([A-Z0-9_]+)`", r[0])}
    assert gone == set(RETIRED)
