"""gunicorn's hooks that may run in the master must not import the app there: the master forks
every later worker from its own state, and nothing heavy is imported before the fork."""

from __future__ import annotations

import subprocess
import sys


def test_worker_exit_in_the_master_imports_nothing_of_the_app() -> None:
    # gunicorn calls worker_exit in the master for a worker found dead before it was reaped
    code = (
        "import sys\n"
        "from embedder.server import gunicorn_config as c\n"
        "c.worker_exit(None, None)\n"
        "heavy = [m for m in ('embedder.server.bootstrap', 'numpy', 'onnxruntime', 'falcon')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "", f"imported in the master: {out.stdout.strip()}"
