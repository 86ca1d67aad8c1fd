from __future__ import annotations

from pathlib import Path

import pytest

from embedder.errors import ConfigError
from embedder.settings import RETIRED, Settings, unread, variables


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
    with pytest.raises(ConfigError, match="EMBEDDER_WORKERS"):
        Settings.from_env({"EMBEDDER_WORKERS": "many"})


def test_gunicorn_settings_come_from_settings() -> None:
    s = Settings.from_env(
        {
            "EMBEDDER_HTTP_THREADS": "4",
            "EMBEDDER_TIMEOUT": "60",
            "EMBEDDER_GRACEFUL_TIMEOUT": "0",
            "EMBEDDER_KEEPALIVE": "2",
            "EMBEDDER_BACKLOG": "64",
            "EMBEDDER_LOG_LEVEL": "WARNING",
        }
    )
    assert (s.http_threads, s.timeout, s.graceful_timeout, s.keepalive) == (4, 60, 0, 2)
    assert (s.backlog, s.log_level) == (64, "warning")


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("EMBEDDER_HTTP_THREADS", "0", "is below 1"),
        ("EMBEDDER_TIMEOUT", "5m", "is not an integer"),
        ("EMBEDDER_BACKLOG", "", None),
        ("EMBEDDER_LOG_LEVEL", "loud", "is not one of debug, info"),
        ("EMBEDDER_MAX_BATCH_TOKENS", "100", "is below 256"),
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


def test_settings_that_went_are_not_read_whatever_their_value() -> None:
    assert not variables() & set(RETIRED)
    old = {name: "not even a value" for name in RETIRED}
    assert Settings.from_env(old) == Settings.from_env({})


def test_gunicorn_config_is_the_same_with_the_settings_that_went(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What gunicorn reads of gunicorn.conf.py (worker recycling, its access log, its control
    socket, ...) is the same whether or not an old configuration sets them."""
    import runpy

    from embedder.tools.launch import source_root

    def config() -> dict[str, object]:
        made = runpy.run_path(str(source_root() / "gunicorn.conf.py"))
        plain = (bool, int, float, str, list, tuple, type(None))
        return {k: v for k, v in made.items() if not k.startswith("__") and isinstance(v, plain)}

    for name in RETIRED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH_SOCKETS", "/run/test-sockets")
    before = config()
    for name in RETIRED:
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("EMBEDDER_ACCESS_LOG", "-")
    monkeypatch.setenv("EMBEDDER_CONTROL_SOCKET", "/run/test-sockets/ctl")
    assert config() == before
    assert "max_requests" not in before and "accesslog" not in before
    assert before["control_socket_disable"] is True


def test_unread_variables_are_named_with_what_to_do() -> None:
    env = {
        "EMBEDDER_SHARED_SESSIONS": "0",  # went
        "EMBEDDER_WORKER": "2",  # misspelt
        "EMBEDDER_COLOUR": "blue",  # nothing like it
        "EMBEDDER_WORKERS": "1",  # a setting
        "HOME": "/home/u",  # not ours
    }
    assert unread(env) == [
        "EMBEDDER_COLOUR is not a setting of this service (ignored)",
        "EMBEDDER_SHARED_SESSIONS is no longer read (ignored): a worker's runners always share "
        "one session per model",
        "EMBEDDER_WORKER is not a setting of this service (ignored); did you mean "
        "EMBEDDER_WORKERS?",
    ]
    assert unread({name: "" for name in variables()}) == []
