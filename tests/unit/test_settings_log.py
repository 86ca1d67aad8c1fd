"""The start-up log's settings: short lines, what was changed first, no secret."""

from __future__ import annotations

from embedder.settings import Settings


def test_settings_log_lines_are_readable() -> None:
    env = {"EMBEDDER_CATALOG": "starter", "EMBEDDER_API_KEY": "sekrit", "EMBEDDER_WORKERS": "1"}
    env |= {"EMBEDDER_BIND": ""}
    lines = Settings.from_env(env).log_lines(width=100)
    assert lines[0] == 'settings changed: catalog=starter bind="" api_key=set workers=1'
    assert lines[1].startswith("settings at defaults: models_root=")
    assert all(len(line) <= 100 for line in lines)
    assert len(lines) <= 12
    text = " ".join(lines)
    assert "sekrit" not in text
    shown = [item.split("=", 1)[0] for item in text.split() if "=" in item]
    internal = {"worker_board", "metrics_dir"}
    assert sorted(shown) == sorted(set(Settings().public()) - internal)  # each once


def test_nothing_changed_says_so() -> None:
    lines = Settings.from_env({}).log_lines()
    assert lines[0] == "settings changed: none"
