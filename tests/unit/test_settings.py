from __future__ import annotations

from pathlib import Path

import pytest

from embedder.errors import ConfigError
from embedder.settings import Settings


def test_defaults() -> None:
    s = Settings.from_env({"HOME": "/home/u"})
    assert s.catalog == "bge"
    assert s.bind is None
    assert s.socket_dir.name == "hero_embedder_provider"
    # One session per model per worker: the 1-hour soak at the shapes catalog's largest
    # shapes cleared it (docs/memory.md); 0 gives each runner its own.
    assert s.shared_sessions is True
    assert Settings.from_env({"EMBEDDER_SHARED_SESSIONS": "0"}).shared_sessions is False


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
    with pytest.raises(ConfigError, match="EMBEDDER_WORKERS"):
        Settings.from_env({"EMBEDDER_WORKERS": "many"})


def test_idle_trim_takes_seconds_and_refuses_what_is_not_a_number() -> None:
    assert Settings.from_env({"EMBEDDER_IDLE_TRIM": "0.5"}).idle_trim == 0.5
    assert Settings.from_env({}).idle_trim == 1.0
    for bad in ("soon", "nan", "-1"):
        with pytest.raises(ConfigError, match="EMBEDDER_IDLE_TRIM"):
            Settings.from_env({"EMBEDDER_IDLE_TRIM": bad})


def test_gunicorn_settings_come_from_settings() -> None:
    s = Settings.from_env(
        {
            "EMBEDDER_HTTP_THREADS": "4",
            "EMBEDDER_TIMEOUT": "60",
            "EMBEDDER_GRACEFUL_TIMEOUT": "0",
            "EMBEDDER_KEEPALIVE": "2",
            "EMBEDDER_BACKLOG": "64",
            "EMBEDDER_MAX_REQUESTS": "1000",
            "EMBEDDER_MAX_REQUESTS_JITTER": "50",
            "EMBEDDER_LOG_LEVEL": "WARNING",
            "EMBEDDER_ACCESS_LOG": "-",
            "EMBEDDER_MALLOC_ARENAS": "4",
        }
    )
    assert (s.http_threads, s.timeout, s.graceful_timeout, s.keepalive) == (4, 60, 0, 2)
    assert (s.backlog, s.max_requests, s.max_requests_jitter) == (64, 1000, 50)
    assert (s.log_level, s.access_log, s.malloc_arenas) == ("warning", "-", 4)
    assert (
        s.control_socket is None and s.worker_class == "embedder.server.http.worker.GuardedWorker"
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("EMBEDDER_HTTP_THREADS", "0", "is below 1"),
        ("EMBEDDER_TIMEOUT", "5m", "is not an integer"),
        ("EMBEDDER_BACKLOG", "", None),
        ("EMBEDDER_LOG_LEVEL", "loud", "is not one of debug, info"),
        ("EMBEDDER_MALLOC_ARENAS", "0", "is below 1"),
        ("EMBEDDER_KEEPALIVE", "-1", "is below 0"),
    ],
)
def test_each_bad_value_is_named(name: str, value: str, says: str | None) -> None:
    if says is None:  # empty means the default
        Settings.from_env({name: value})
        return
    with pytest.raises(ConfigError, match=name) as err:
        Settings.from_env({name: value})
    assert says in err.value.message


def test_gunicorn_stops_on_a_bad_value_with_one_line_naming_it(tmp_path: Path) -> None:
    """The master reads Settings when it loads gunicorn.conf.py: a bad value ends the start
    before anything is bound, with the variable's name and no traceback."""
    import os
    import subprocess
    import sys

    from embedder.tools.launch import source_root

    env = {**os.environ, "PATH_SOCKETS": str(tmp_path), "EMBEDDER_HTTP_THREADS": "lots"}
    run = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=source_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "EMBEDDER_HTTP_THREADS='lots' is not an integer" in out, out
    assert "Traceback" not in out, out
    assert not (tmp_path / "hero_embedder_provider").exists(), "nothing was bound"
