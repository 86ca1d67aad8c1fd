from __future__ import annotations

from pathlib import Path

import pytest

from embedder.errors import InvalidInput
from embedder.settings import Settings


def test_defaults() -> None:
    s = Settings.from_env({"HOME": "/home/u"})
    assert s.catalog == "bge"
    assert s.bind is None
    assert s.socket_dir.name == "hero_embedder_provider"


def test_env_names() -> None:
    s = Settings.from_env(
        {
            "PATH_SOCKETS": "/run/x",
            "EMBEDDER_BIND": "",
            "EMBEDDER_CATALOG": "starter",
            "EMBEDDER_MODELS_ROOT": "/m",
            "EMBEDDER_WORKERS": "3",
            "EMBEDDER_THREADS": "2",
            "EMBEDDER_API_KEY": "k",
        }
    )
    assert s.socket_dir == Path("/run/x/hero_embedder_provider")
    assert s.bind == ""
    assert s.catalog == "starter"
    assert s.models_root == Path("/m")
    assert s.sizing(8) == (3, 2)
    assert s.public()["api_key"] == "set"


def test_sizing_fills_the_cores() -> None:
    assert Settings().sizing(2) == (1, 2)
    assert Settings().sizing(4) == (1, 4)
    assert Settings().sizing(6) == (2, 3)
    assert Settings().sizing(16) == (4, 4)
    assert Settings().sizing(1) == (1, 1)
    assert Settings(threads=2).sizing(4) == (2, 2)
    assert Settings(workers=1).sizing(4) == (1, 4)


def test_bad_values_are_named() -> None:
    with pytest.raises(InvalidInput, match="EMBEDDER_WORKERS"):
        Settings.from_env({"EMBEDDER_WORKERS": "many"})


def test_idle_trim_takes_seconds_and_refuses_what_is_not_a_number() -> None:
    assert Settings.from_env({"EMBEDDER_IDLE_TRIM": "0.5"}).idle_trim == 0.5
    assert Settings.from_env({}).idle_trim == 1.0
    for bad in ("soon", "nan", "-1"):
        with pytest.raises(InvalidInput, match="EMBEDDER_IDLE_TRIM"):
            Settings.from_env({"EMBEDDER_IDLE_TRIM": bad})
