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
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from embedder.client import Client, ClientError, NotReadyError, ServiceUnreachable
from embedder.errors import EmbedderError, InvalidInput, UnknownModel
from embedder.settings import Settings

if TYPE_CHECKING:
    from embedder.catalog import Catalog, ModelSpec
    from embedder.store import ModelStore

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

    def add(p: Any, name: str, text: str, epilog: str = EXIT_CODES) -> argparse.ArgumentParser:
        out: argparse.ArgumentParser = p.add_parser(
            name, help=text, description=text, parents=[common], epilog=epilog
        )
        out.set_defaults(parser=out)  # the innermost parser: its help and errors are the apt ones
        return out

    add(
        sub,
        "serve",
        "Run the service (gunicorn with the project's gunicorn.conf.py).",
        f"Other arguments go to gunicorn (after `--` if they clash with these). {EXIT_CODES}",
    )
    models = add(sub, "models", "Model files of the active catalog.")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    listing = add(msub, "list", "Every model: level, precision, dims, files present, size.")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    for name, text in (
        ("pull", "Download or build missing files (progress on stderr)."),
        ("verify", "Check sizes and hashes, then load each model and run it once."),
    ):
        ids = "model ids (default: EMBEDDER_MODELS, else every model)"
        add(msub, name, text).add_argument("ids", nargs="*", help=ids)
    quantize = add(msub, "quantize", "Quantize an FP32 ONNX graph to INT8 (the project's recipe).")
    quantize.add_argument("src", type=Path, help="FP32 .onnx file")
    quantize.add_argument("out", type=Path, help="INT8 .onnx file to write")
    status = add(
        sub,
        "status",
        "Ask a running instance over rpc.sock: state, models, downloads.",
        "exit codes: 0 ok, 1 degraded/error/failure, 2 usage, 3 unreachable, 4 still starting",
    )
    status.add_argument("--json", action="store_true", help="the raw `status` result")
    status.add_argument("--socket", type=Path, help="rpc.sock (default: from PATH_SOCKETS)")
    status.add_argument(
        "--url", help="http://host:port (needs EMBEDDER_TCP_EXPOSE=rpc; key: EMBEDDER_API_KEY)"
    )
    status.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    add(sub, "bench", "Benchmark (embedder.bench); its arguments follow, after `--` if needed.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
        return USAGE if isinstance(e, InvalidInput | UnknownModel) else FAILURE
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, extra: list[str], env: dict[str, str]) -> int:
    if args.command == "serve":
        return serve(extra, env)
    if args.command == "status":
        return status(args, env)
    if args.command == "bench":
        return bench(extra)
    if args.command == "models" and args.models_command == "quantize":
        return quantize(args.src, args.out)
    if args.command == "models" and args.models_command:
        settings, catalog, store = _context(env)
        if args.models_command == "list":
            return models_list(settings, catalog, store, as_json=args.json)
        ids = args.ids or list(settings.models) or [m.id for m in catalog]
        specs = [catalog.get(i) for i in dict.fromkeys(ids)]
        return (models_pull if args.models_command == "pull" else models_verify)(store, specs)
    args.parser.print_help(sys.stderr)
    return USAGE


def _context(env: Mapping[str, str]) -> tuple[Settings, Catalog, ModelStore]:
    from embedder.catalog_file import load_catalog
    from embedder.store import ModelStore

    settings = Settings.from_env(env)
    catalog = load_catalog(settings.catalog)
    return settings, catalog, ModelStore(settings.models_root, catalog)


# --- commands ------------------------------------------------------------------------------


def serve(extra: list[str], env: dict[str, str]) -> int:
    """Exec gunicorn (same pid: systemd and signals see gunicorn itself) with the project config."""
    root = Path(__file__).resolve().parent.parent
    conf = root / "gunicorn.conf.py"
    if not conf.is_file() or not (root / "wsgi.py").is_file():
        print(
            f"embedder: no gunicorn.conf.py and wsgi.py next to the package in {root}; "
            "serve needs a source checkout (pip install -e)",
            file=sys.stderr,
        )
        return FAILURE
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "gunicorn", "-c", str(conf), *extra]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)
    return FAILURE  # only reached when execve is replaced (tests)


def models_list(settings: Settings, catalog: Catalog, store: ModelStore, *, as_json: bool) -> int:
    rows = []
    for spec in catalog:
        missing = store.missing(spec)
        disk = store.disk_size(spec)
        rows.append({**spec.describe(), "present": not missing, "missing": missing, "disk": disk})
    if as_json:
        doc = {"catalog": catalog.name, "models_root": str(settings.models_root), "models": rows}
        print(json.dumps({**doc, "aliases": dict(catalog.aliases)}, indent=2))
        return OK
    for r in rows:
        r.update(files="present" if r["present"] else f"missing {len(r['missing'])}")
        r.update(size=_size(r["disk"]))
    print(_table(("id", "level", "kind", "precision", "dims", "max_tokens", "files", "size"), rows))
    aliases = ", ".join(f"{a} -> {t}" for a, t in catalog.aliases.items())
    print(f"\ncatalog {catalog.name}; models root {settings.models_root}\naliases: {aliases}")
    return OK


def models_pull(store: ModelStore, specs: list[ModelSpec]) -> int:
    failed = []
    for spec in specs:
        if not store.missing(spec):
            print(f"ok    {spec.id}: already present", file=sys.stderr)
            continue
        bar = _Bars(store, spec, sys.stderr)
        try:
            store.ensure(spec)
        except EmbedderError as e:
            failed.append(spec.id)
            bar.finish()
            print(f"FAIL  {spec.id}: {e.message}", file=sys.stderr)
            continue
        bar.finish()
        print(f"ok    {spec.id}: {_size(store.disk_size(spec))}", file=sys.stderr)
    return FAILURE if failed else OK


def models_verify(store: ModelStore, specs: list[ModelSpec]) -> int:
    """Files first (offline: verify never downloads or builds), then a real load and one run."""
    from embedder.reranker import Doc
    from embedder.service import Service
    from embedder.store import ModelStore as Store

    store = Store(store.root, store.catalog, offline=True, hf_cache=store.hf_cache)
    failed: list[ModelSpec] = []
    sound: list[ModelSpec] = []
    for spec in specs:
        problems = store.verify(spec)
        for p in problems:
            print(f"FAIL  {spec.id}: {p}")
        (failed if problems else sound).append(spec)
    service = Service(store.catalog, store, models=[s.id for s in sound], micro_batching=False)
    if sound:  # an empty list would mean the whole catalog
        service.load_all()
    for spec in sound:
        try:
            if (error := service.status_by_id[spec.id].error) is not None:
                raise EmbedderError(f"does not load: {error}")
            if spec.kind == "embedding":
                _, got = service.embed(["verify this model"], model=spec.id)
                norm = float((got.vectors[0] ** 2).sum() ** 0.5)
                if abs(norm - 1) > 1e-3 or (spec.dims and got.vectors.shape[1] != spec.dims):
                    raise EmbedderError(f"odd output: shape {got.vectors.shape}, norm {norm}")
                what = f"{got.vectors.shape[1]} dims"
            else:
                docs = [Doc("a", "a matching text"), Doc("b", "something else")]
                _, ranking = service.rerank("a matching text", docs, model=spec.id)
                what = f"scores {[round(r.score, 3) for r in ranking.results]}"
        except EmbedderError as e:
            failed.append(spec)
            print(f"FAIL  {spec.id}: {e.message}")
            continue
        secs = service.status_by_id[spec.id].load_seconds
        print(f"ok    {spec.id}: {_size(store.disk_size(spec))}, loads in {secs}s, {what}")
    return FAILURE if failed else OK


def quantize(src: Path, out: Path) -> int:
    from embedder.prepare import RECIPES

    if not src.is_file():
        print(f"embedder: {src} is not a file", file=sys.stderr)
        return FAILURE
    started, tmp = time.monotonic(), out.with_name(f".{out.stem}.partial{out.suffix}")
    try:  # to a temporary name first: OUT is either the whole graph or untouched
        RECIPES["quantize-int8"]([src], tmp)
        os.replace(tmp, out)
    except Exception as e:  # the quantizer's own errors: report them, do not trace back
        print(f"embedder: quantizing {src} failed: {e!r}", file=sys.stderr)
        return FAILURE
    finally:
        tmp.unlink(missing_ok=True)
    took = time.monotonic() - started
    print(f"{out}: {_size(out.stat().st_size)} (from {_size(src.stat().st_size)}) in {took:.1f}s")
    return OK


def status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    sock = None if args.url else args.socket or Settings.from_env(env).socket_dir / "rpc.sock"
    key = env.get("EMBEDDER_API_KEY") if args.url else None
    with Client(sock, url=args.url, timeout=args.timeout, api_key=key) as client:
        st = client.status()
    if args.json:
        print(json.dumps(st.raw, indent=2))
    else:
        print(
            f"{st.health.status}: catalog {st.catalog}, up {st.uptime_s:.0f}s, "
            f"models root {st.models_root}, via {client.address}"
        )
        rows = [{**m.raw, "size": _size(m.disk_bytes), "error": m.error or ""} for m in st.models]
        keys = ("id", "level", "kind", "precision", "state", "load_seconds", "size", "error")
        print(_table(keys, rows))
        for model, d in st.raw.get("downloads", {}).items():
            if d.get("state") not in ("ready", None):
                done, total = _size(d.get("bytes_done", 0)), _size(d.get("bytes_total", 0))
                print(f"download {model}: {d['state']} {done} of {total}")
    return {"ok": OK, "starting": NOT_READY}.get(st.health.status, FAILURE)


def bench(extra: list[str]) -> int:
    if importlib.util.find_spec("embedder.bench") is None:
        msg = "the benchmark (embedder.bench) is not part of this installation"
        print(f"embedder: {msg}", file=sys.stderr)
        return FAILURE
    return int(importlib.import_module("embedder.bench").main(extra) or 0)


# --- output --------------------------------------------------------------------------------


class _Bars:
    """Per-file progress of one `ensure`, polled from the store's progress file: redrawn in
    place on a terminal, one line per state change otherwise (logs, CI)."""

    def __init__(self, store: ModelStore, spec: ModelSpec, out: IO[str]) -> None:
        self.store, self.spec, self.out = store, spec, out
        self.tty, self.drawn = out.isatty(), 0
        self.seen: dict[str, str] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, name="progress", daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stop.wait(0.2):
            self.draw()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()
        self.draw()

    def draw(self) -> None:
        files = self.store.progress(self.spec)["files"]
        lines = []
        for f in files:
            label, state = f"{f['model']}/{f['name']}", str(f["state"])
            done, total = int(f.get("bytes_done") or 0), int(f.get("bytes_total") or 0)
            frac = done / total if total else (1.0 if state == "done" else 0.0)
            bar = "#" * int(frac * 24)
            lines.append(f"{label:48.48} [{bar:24}] {frac:4.0%} {_size(done):>10} {state}")
            if not self.tty and self.seen.get(label) != state:
                self.seen[label] = state
                print(lines[-1], file=self.out)
        if self.tty:
            up = f"\x1b[{self.drawn}F" if self.drawn else ""
            self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self.drawn = len(lines)
        self.out.flush()


def _table(keys: Sequence[str], rows: Sequence[Mapping[str, object]]) -> str:
    """Aligned columns headed by the upper-cased keys; None shows as '-'."""
    head = [k.upper().replace("_", " ") for k in keys]
    cells = [head, *[["-" if r.get(k) is None else str(r.get(k)) for k in keys] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(keys))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def _size(n: int | None) -> str:
    size = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


if __name__ == "__main__":
    sys.exit(main())
