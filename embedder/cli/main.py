"""The `embedder` command: run the service, manage model files, ask a running instance.

Exit codes are part of the interface, so scripts can branch on them: 0 ok, 1 failure, 2 usage
(bad arguments, unknown model id or catalog), 3 service unreachable, 4 service not ready yet.
Heavy imports (ONNX Runtime, the store) happen inside the commands that need them, so that
`embedder status` in a readiness probe stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedder.cli import ask
from embedder.cli.models import (
    human_size,
    models_list,
    models_pull,
    models_verify,
    quantize,
    text_table,
)
from embedder.client import (
    Client,
    ClientError,
    HttpError,
    InvalidParamsError,
    NotReadyError,
    ServiceUnreachable,
    UnknownModelError,
)
from embedder.client.transport import default_socket
from embedder.errors import ConfigError, EmbedderError, InvalidInput, UnknownModel
from embedder.sessions import disable_ort_telemetry
from embedder.settings import Settings

if TYPE_CHECKING:
    from embedder.catalog import Catalog
    from embedder.store.files import ModelStore

OK, FAILURE, USAGE, UNREACHABLE, NOT_READY = 0, 1, 2, 3, 4
EXIT_CODES = "exit codes: 0 ok, 1 failure, 2 usage, 3 service unreachable, 4 service not ready"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)  # accepted before or after the command
    common.add_argument("--catalog", default=argparse.SUPPRESS, help="overrides EMBEDDER_CATALOG")
    common.add_argument(
        "--models-root", default=argparse.SUPPRESS, help="overrides EMBEDDER_MODELS_ROOT"
    )
    parser = argparse.ArgumentParser(prog="embedder", parents=[common], epilog=EXIT_CODES)
    parser.set_defaults(parser=parser)  # not catalog=None: the actions are shared with `common`
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        p: Any, name: str, text: str, epilog: str = EXIT_CODES, catalog: bool = True
    ) -> argparse.ArgumentParser:
        out: argparse.ArgumentParser = p.add_parser(
            name, help=text, description=text, parents=[common] if catalog else [], epilog=epilog
        )
        out.set_defaults(parser=out)  # the innermost parser: its help and errors are the apt ones
        return out

    add(
        sub,
        "serve",
        "Run the service (gunicorn with the package's config, from any directory).",
        f"Other arguments go to gunicorn (after `--` if they clash with these). {EXIT_CODES}",
    )
    models = add(
        sub,
        "models",
        "Model files of a catalog: --catalog's, else EMBEDDER_CATALOG's, else the one the "
        "service on this socket root serves, else bge.",
    )
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    listing = add(msub, "list", "Every model: level, precision, dims, files present, size.")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    for name, text in (
        ("pull", "Download or build missing files (progress on stderr)."),
        (
            "verify",
            "Check sizes and hashes, then load each model and run it once. Also checks "
            "OpenVINO's int8-weights form of an INT8 level where one was built "
            "(openvino_int8.onnx): current, or stale or damaged and rebuilt on next load.",
        ),
    ):
        ids = "model ids (default: EMBEDDER_MODELS, else every model)"
        add(msub, name, text).add_argument("ids", nargs="*", help=ids)
    quantize = add(msub, "quantize", "Quantize an FP32 ONNX graph to INT8 (the project's recipe).")
    quantize.add_argument("src", type=Path, help="FP32 .onnx file")
    quantize.add_argument("out", type=Path, help="INT8 .onnx file to write")
    status = add(
        sub,
        "status",
        "Ask a running instance over rpc.sock: state, models, downloads. With --url, over TCP: "
        "the same if the server exposes JSON-RPC there, else its /health.",
        "exit codes: 0 ok, 1 degraded/error/failure, 2 usage, 3 unreachable, 4 still starting",
    )
    status.add_argument("--json", action="store_true", help="the raw `status` result")
    status.add_argument("--socket", type=Path, help="rpc.sock (default: from PATH_SOCKETS)")
    status.add_argument(
        "--url", help="http://host:port: TCP instead (the key, if any: EMBEDDER_API_KEY)"
    )
    status.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    embed = add(sub, "embed", "Embed texts with a running instance (a smoke test).", catalog=False)
    embed.add_argument("texts", nargs="+", metavar="TEXT")
    embed.add_argument("--quality", type=int, help="quality level (1-4)")
    embed.add_argument("--model", help="model id or alias")
    embed.add_argument(
        "--query", action="store_true", help="add the model's query instruction (JSON-RPC only)"
    )
    ask.add_target(embed)
    rerank = add(
        sub, "rerank", "Rank documents against a query with a running instance.", catalog=False
    )
    rerank.add_argument("query", metavar="QUERY")
    rerank.add_argument("docs", nargs="+", metavar="DOC")
    rerank.add_argument("--top-k", type=int, help="keep the best K")
    rerank.add_argument("--model", help="reranker id or alias")
    rerank.add_argument("--raw", action="store_true", help="unmapped scores (logits, cosines)")
    ask.add_target(rerank)
    text = "Benchmark (embedder.tools.bench): `embedder bench --help` lists its options."
    # No options of its own: --help, --catalog and the rest go to the bench's parser.
    sub.add_parser("bench", help=text, add_help=False).set_defaults(parser=parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    disable_ort_telemetry()  # some commands load models in this process; `serve` passes it on
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("serve", "bench"):
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    extra = extra[1:] if extra[:1] == ["--"] else extra
    env = dict(os.environ)
    if catalog := getattr(args, "catalog", None):
        env["EMBEDDER_CATALOG"] = catalog
    if root := getattr(args, "models_root", None):
        env["EMBEDDER_MODELS_ROOT"] = str(Path(root).expanduser().resolve())
    try:
        return _dispatch(args, extra, env)
    except (ClientError, EmbedderError) as e:
        print(f"embedder: {e}", file=sys.stderr)
        if isinstance(e, NotReadyError | ServiceUnreachable):
            return NOT_READY if isinstance(e, NotReadyError) else UNREACHABLE
        # a bad setting or catalog, an unknown model id: the caller's to fix, like bad arguments
        mistakes = ConfigError | InvalidInput | UnknownModel | InvalidParamsError
        return USAGE if isinstance(e, mistakes | UnknownModelError) else FAILURE
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, extra: list[str], env: dict[str, str]) -> int:
    if args.command == "serve":
        return serve(extra, env)
    if args.command == "status":
        return status(args, env)
    if args.command == "embed":
        return ask.embed(args, env)
    if args.command == "rerank":
        return ask.rerank(args, env)
    if args.command == "bench":
        return bench(extra)
    if args.command == "models" and args.models_command == "quantize":
        return quantize(args.src, args.out)
    if args.command == "models" and args.models_command:
        env, source = _catalog_source(args, env)
        settings, catalog, store = _context(env)
        print(f"catalog {catalog.name} ({source}; another: {OTHER_CATALOG})", file=sys.stderr)
        if args.models_command == "list":
            return models_list(settings, catalog, store, as_json=args.json)
        ids = args.ids or list(settings.models) or [m.id for m in catalog]
        specs = [catalog.get(i) for i in dict.fromkeys(ids)]
        return (models_pull if args.models_command == "pull" else models_verify)(store, specs)
    args.parser.print_help(sys.stderr)
    return USAGE


OTHER_CATALOG = "--catalog bge|starter|shapes|FILE"


def _catalog_source(args: argparse.Namespace, env: dict[str, str]) -> tuple[dict[str, str], str]:
    """Which catalog a `models` command reads, and why: --catalog, else EMBEDDER_CATALOG, else
    the one the service on this socket root serves (and its models root, unless one is
    given), else bge. A bare `embedder models list` then lists the running service's models,
    whatever catalog it was started with."""
    from embedder.catalog import BUILTIN

    if getattr(args, "catalog", None):
        return env, "from --catalog"
    if env.get("EMBEDDER_CATALOG"):
        return env, "from EMBEDDER_CATALOG"
    sock = default_socket("rpc.sock", env)
    try:
        with Client(sock, timeout=2.0) as client:
            served = client.call("status")
    except ClientError:
        return env, f"the default: no service answers on {sock}"
    name, root = str(served.get("catalog")), served.get("models_root")
    if name not in BUILTIN:
        return env, f"the default; the service on {sock} serves {name!r}, from a catalog file"
    env = {**env, "EMBEDDER_CATALOG": name}
    if root and not env.get("EMBEDDER_MODELS_ROOT"):
        env["EMBEDDER_MODELS_ROOT"] = str(root)
    return env, f"the one the service on {sock} serves"


def _context(env: Mapping[str, str]) -> tuple[Settings, Catalog, ModelStore]:
    from embedder.catalog_file import load_catalog
    from embedder.store.files import ModelStore

    settings = Settings.from_env(env)
    catalog = load_catalog(settings.catalog)
    return settings, catalog, ModelStore(settings.models_root, catalog)


# --- commands ------------------------------------------------------------------------------


def serve(extra: list[str], env: dict[str, str]) -> int:
    """Exec gunicorn (same pid: systemd and signals see gunicorn itself) with the package's
    config, after saying which served models lack an installed package (none may: refused)."""
    from embedder.cli.serve import check, gunicorn_argv

    may_start, said = check(env)
    if said:
        print(f"embedder serve: {said}", file=sys.stderr)
    if not may_start:
        return FAILURE
    argv = gunicorn_argv(extra)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
    return FAILURE  # only reached when execve is replaced (tests)


def status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    sock = None if args.url else args.socket or Settings.from_env(env).socket_dir / "rpc.sock"
    key = env.get("EMBEDDER_API_KEY") if args.url else None
    with Client(sock, url=args.url, timeout=args.timeout, api_key=key) as client:
        try:
            st = client.status()
        except HttpError as e:
            if not args.url or e.status != 404:
                raise
            return ask.health_only(client, args.json)  # TCP without JSON-RPC: its /health
    if args.json:
        print(json.dumps(st.raw, indent=2))
    else:
        print(
            f"{st.health.status}: catalog {st.catalog}, up {st.uptime_s:.0f}s, "
            f"models root {st.models_root}, via {client.address}"
        )
        rows = [
            {**m.raw, "size": human_size(m.disk_bytes), "error": m.error or ""} for m in st.models
        ]
        keys = ["id", "level", "kind", "precision", "backend", "compute_precision", "state"]
        keys += ["load_seconds", "size", "error"]
        print(text_table(keys, rows))
        for model, d in st.raw.get("downloads", {}).items():
            if d.get("state") not in ("ready", None):
                total = d.get("bytes_total") or 0  # 0: sizes not known yet (nothing fetched)
                done = f" {human_size(d.get('bytes_done'))} of {human_size(total)}"
                print(f"download {model}: {d['state']}{done if total else ''}")
        for key, cause in (st.raw.get("failures") or {}).items():
            print(f"failures.{key}: {cause}")
    return {"ok": OK, "starting": NOT_READY}.get(st.health.status, FAILURE)


def bench(extra: list[str]) -> int:
    if importlib.util.find_spec("embedder.tools.bench") is None:
        msg = "the benchmark (embedder.tools.bench) is not part of this installation"
        print(f"embedder: {msg}", file=sys.stderr)
        return FAILURE
    return int(importlib.import_module("embedder.tools.bench").main(extra) or 0)


if __name__ == "__main__":
    sys.exit(main())
