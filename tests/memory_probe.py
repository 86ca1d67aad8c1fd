"""What loading a model adds to a process's memory, measured in fresh child processes: RSS is
a memory fact, not a speed fact, and in a process that has loaded other things before it is
blurred by what they left."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

# The child's arguments: the models root, the model, the runners (one per core of a worker).
_HEAD = """
import json, os, sys
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
from pathlib import Path
import onnxruntime, psutil
from embedder.catalog import STARTER
from embedder.memory import limit_arenas
from embedder.store.files import ModelStore
root, model, runners = sys.argv[1], sys.argv[2], int(sys.argv[3])
rss = lambda: psutil.Process().memory_info().rss
store = ModelStore(Path(root), STARTER, offline=True)
"""

_COUNT_FROM_HERE = """
limit_arenas(2)  # as a worker does
base = rss()
"""

# Read after the trim a worker makes once idle: without it, what loading had freed but malloc
# kept varied by up to 25 % between processes (3 levels, whatever the runners) and decided
# comparisons within 10 %.
_REPORT = """
from embedder.memory import libc_trim
libc_trim()()
print(json.dumps({"model_bytes": rss() - base, **facts}))
"""


def model_memory(
    root: Path, model: str, runners: int, *, setup: str, load: str, tries: int
) -> dict[str, Any]:
    """What `load` adds to the RSS of a fresh process ("model_bytes"), with the `facts` (a
    dict) it leaves: the least of `tries` processes, since noise only ever adds. `setup` runs
    before the count starts: what a worker has loaded before its first model. Both are
    Python run in the child, which has `store`, `model` and `runners` (see `_HEAD`)."""
    child = "".join(
        [_HEAD, textwrap.dedent(setup), _COUNT_FROM_HERE, textwrap.dedent(load), _REPORT]
    )
    runs = []
    for _ in range(tries):
        out = subprocess.run(
            [sys.executable, "-c", child, str(root), model, str(runners)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        runs.append(dict(json.loads(out.stdout.strip().splitlines()[-1])))
    return min(runs, key=lambda r: r["model_bytes"])
