"""deploy/nginx.conf in front of two real instances: one is SIGKILLed under load, and no
request sent after the kill fails (proxy_next_upstream retries it on the other, then nginx
skips the dead one). A request whose response the victim was already writing when it died
cannot be retried by any proxy (the client has the headers); at most one per client thread."""

from __future__ import annotations

import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedder.tools import launch
from tests.integration import server as srv

pytestmark = pytest.mark.integration

TEMPLATE = srv.ROOT / "deploy" / "nginx.conf"
REQUESTS, THREADS, KILL_AFTER = 200, 4, 60


def _nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not found:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx, or `make system-deps`)")
    return found


def start_instance(tmp: Path, models_root: Path) -> srv.Server:
    """Like srv.start, but in its own session, so the whole process group can be SIGKILLed."""
    g = launch.start(tmp, models_root, workers=1, models=["all-minilm-l6-v2"], new_session=True)
    return srv.Server(g.proc, g.sockets, g.port, g.log, g.workers, g.env)


def nginx_config(tmp: Path, ports: list[int], listen: int) -> str:
    """The deploy snippet with the test's instances, port and log, in a minimal main config."""
    snippet = TEMPLATE.read_text()
    line = r"^[ \t]*server[ \t]+([^\s{;#]+)[ \t]+([^;#\n]*);[ \t]*\n"
    servers = re.findall(line, snippet, flags=re.M)
    assert servers, "the template lists its instances as `server <address> <params>;` lines"
    params = servers[0][1]  # the deploy file's max_fails / fail_timeout, as shipped
    ours = "".join(f"    server 127.0.0.1:{p} {params};\n" for p in ports)
    snippet = re.sub(line, "", snippet, flags=re.M)
    snippet = snippet.replace("upstream hero_embedder {\n", "upstream hero_embedder {\n" + ours)
    here = f"listen 127.0.0.1:{listen};"
    snippet, n = re.subn(r"^([ \t]*)listen[ \t]+[^;]+;", rf"\1{here}", snippet, flags=re.M)
    snippet, m = re.subn(r"access_log\s+\S+", f"access_log {tmp / 'access.log'}", snippet)
    assert n == 1 and m == 1, "the template has one listen and one access_log directive"
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    temp = "".join(
        f"{k}_temp_path {tmp / k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}\ndaemon off;\nworker_processes 1;\npid {tmp / 'nginx.pid'};\n"
        f"error_log {tmp / 'error.log'} warn;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n{temp}{snippet}\n}}\n"
    )


@pytest.fixture
def cluster(tmp_path: Path, built_root: Path) -> Iterator[tuple[list[srv.Server], int]]:
    nginx = _nginx()
    instances: list[srv.Server] = []
    proxy: subprocess.Popen[bytes] | None = None
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            instances.append(start_instance(tmp_path / name, built_root))
        port, conf = srv.free_port(), tmp_path / "nginx.conf"
        conf.write_text(nginx_config(tmp_path, [s.port or 0 for s in instances], port))
        proxy = subprocess.Popen(
            [nginx, "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for s in instances:
            s.wait_ready(60)
        deadline = time.monotonic() + 10
        while _post(port, 0)[0] != 200:
            assert proxy.poll() is None, (tmp_path / "error.log").read_text()
            assert time.monotonic() < deadline, "nginx did not come up"
            time.sleep(0.1)
        yield instances, port
    finally:
        if proxy is not None:
            proxy.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proxy.pid, signal.SIGKILL)
                proxy.wait()
        for s in instances:
            s.stop()


def _post(port: int, i: int) -> tuple[int, bytes]:
    """One embeddings request through nginx; (0, reason) if nginx itself cannot be reached."""
    body = json.dumps({"model": "all-minilm-l6-v2", "input": [f"request {i}", "the same text"]})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as e:
        return 0, repr(e).encode()
    finally:
        conn.close()


def test_killed_instance_is_skipped_and_no_request_fails(
    cluster: tuple[list[srv.Server], int], tmp_path: Path
) -> None:
    (victim, survivor), port = cluster
    results: dict[int, tuple[int, bytes]] = {}
    started: dict[int, float] = {}
    todo = iter(range(REQUESTS))
    lock, halfway = threading.Lock(), threading.Event()

    def load() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            started[i] = time.monotonic()
            results[i] = _post(port, i)
            if len(results) >= KILL_AFTER:
                halfway.set()

    threads = [threading.Thread(target=load) for _ in range(THREADS)]
    for t in threads:
        t.start()
    assert halfway.wait(60), "the load never got going"
    os.killpg(victim.proc.pid, signal.SIGKILL)  # master and worker, with requests in flight
    kill_time = time.monotonic()
    killed_at = len(results)
    victim.proc.wait(10)
    for t in threads:
        t.join(60)

    failed = {i: r for i, r in results.items() if r[0] != 200}
    after_kill = {i: r for i, r in failed.items() if started[i] >= kill_time}
    assert len(results) == REQUESTS and not after_kill, after_kill
    assert len(failed) <= THREADS, failed  # only what was in flight at the kill
    ok = [body for status, body in results.values() if status == 200]
    assert all(len(json.loads(body)["data"]) == 2 for body in ok)
    assert killed_at < REQUESTS - 50, "the kill must land mid-load"

    log = (tmp_path / "access.log").read_text().splitlines()
    served = [re.search(r"upstream=(\S+(?:, \S+)*) upstream_status", line) for line in log]
    upstreams = [m.group(1).split(", ") for m in served if m]
    dead, alive = f"127.0.0.1:{victim.port}", f"127.0.0.1:{survivor.port}"
    assert {u[-1] for u in upstreams} == {dead, alive}, "both instances served before the kill"
    retried = [i for i, u in enumerate(upstreams) if u[:-1] == [dead] and u[-1] == alive]
    assert retried, "nginx retried a request the dead instance could not serve"
    assert all(u[-1] == alive for u in upstreams[retried[0] :]), "then skipped the dead one"
    assert survivor.json("rest.sock", "GET", "/health")[1]["status"] == "ok"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", victim.port or 0)) != 0, "the victim is really gone"
