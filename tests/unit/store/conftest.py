"""The store's tests never read the user's Hugging Face cache."""

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_user_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores (and child processes) look in an empty Hugging Face cache, never the user's."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
