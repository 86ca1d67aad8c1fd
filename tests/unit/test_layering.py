"""What the service imports: never the bench, the soak or their experiments (`embedder.tools`),
so that they can change, or be left out of an installation, without touching what serves."""

from __future__ import annotations

import json
import subprocess
import sys

SERVING = (
    "embedder.service",
    "embedder.server.bootstrap",
    "embedder.server.http.app",
    "embedder.server.http.worker",
    "embedder.cli.main",
)


def test_the_serving_modules_import_nothing_of_the_tools() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {SERVING!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('embedder.tools'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
