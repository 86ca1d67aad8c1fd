"""The client needs only the wire: it imports neither the server nor the engine, its modules
import one another without a cycle, and a copy of the package under another name works."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import embedder.client
from embedder.client.transport import default_socket
from embedder.client.types import RPC_BY_REST_CODE
from embedder.server.http.errors import TABLE
from embedder.settings import Settings

PACKAGE = Path(embedder.client.__file__).parent
ROOT = PACKAGE.parents[1]


def run(code: str, cwd: Path, path: Path) -> str:
    env = {"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin", "ORT_DISABLE_TELEMETRY": "1"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_the_client_loads_no_server_engine_or_runtime() -> None:
    out = run(
        "import json, sys, embedder.client; print(json.dumps(sorted(sys.modules)))", ROOT, ROOT
    )
    modules = json.loads(out)
    ours = {m for m in modules if m == "embedder" or m.startswith("embedder.")}
    assert ours - {"embedder"} <= {f"embedder.client.{m.stem}" for m in PACKAGE.glob("*.py")} | {
        "embedder.client"
    }
    for heavy in ("onnxruntime", "falcon", "gunicorn", "tokenizers"):
        assert heavy not in modules


def _imports(module: Path) -> set[str]:
    """The client modules `module` imports (relative or absolute, TYPE_CHECKING ones too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:
                out.update(a.name for a in node.names)
            elif (node.module or "").startswith("embedder.client."):
                out.add((node.module or "").split(".")[2])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[2] for a in node.names if a.name.count(".") >= 2)
    return out - {"__init__"}


def test_the_client_modules_import_each_other_without_a_cycle() -> None:
    graph = {m.stem: _imports(m) for m in PACKAGE.glob("*.py") if m.stem != "__init__"}
    for start in graph:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            name = todo.pop()
            assert name != start, f"{start} imports itself through {sorted(seen)}"
            if name not in seen:
                seen.add(name)
                todo.extend(graph.get(name, ()))


def test_a_copy_of_the_package_under_another_name_works_without_embedder(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE, tmp_path / "hero_client", ignore=shutil.ignore_patterns("__pycache__"))
    out = run(
        """
        import sys
        sys.modules["embedder"] = None  # the project's own package must not be needed
        from pathlib import Path
        import hero_client
        client = hero_client.Client(Path("nowhere") / "rpc.sock", timeout=5)
        try:
            client.health()
        except hero_client.ServiceUnreachable as e:
            print("unreachable:", e)
        """,
        tmp_path,
        tmp_path,
    )
    assert out.startswith("unreachable: cannot reach hero_embedder_provider on nowhere")


def test_the_clients_error_pairs_are_the_servers() -> None:
    assert {m.code: m.rpc for m in TABLE.values()} == RPC_BY_REST_CODE


@pytest.mark.parametrize("root", ["", "/run", "~/sockets"])
def test_the_clients_default_socket_is_where_the_service_puts_it(root: str) -> None:
    env = {"PATH_SOCKETS": root} if root else {}
    assert default_socket("rpc.sock", env) == Settings.from_env(env).socket_dir / "rpc.sock"
