"""The socket directory is the service's own (issue 15 item 6), shown on a real gunicorn: a
planted symlink or another user's directory stops the start with a clear message, and
nothing the service did not write is changed or deleted."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.integration import server as srv

pytestmark = pytest.mark.integration


def _start_and_exit(tmp: Path, models: Path, sockets: Path) -> tuple[int | None, str]:
    """gunicorn's exit code, or None if it bound its sockets instead (polled, 120 s bound)."""
    server = srv.start(tmp, models, workers=1, tcp=False, socket_root=sockets)
    rest = sockets / "hero_embedder_provider" / "rest.sock"
    deadline = time.monotonic() + 120
    try:
        while server.proc.poll() is None and time.monotonic() < deadline:
            if rest.exists():
                break  # it started: the refusal did not happen
            time.sleep(0.05)
        code = server.proc.poll()
    finally:
        server.stop()
    return code, server.log.read_text()


def test_a_planted_symlink_stops_the_start_and_its_target_survives(
    tmp_path: Path, built_root: Path
) -> None:
    victim = tmp_path / "victim"
    (victim / ".metrics").mkdir(parents=True)
    (victim / ".metrics" / "counter_1.db").write_text("theirs")
    (victim / ".metrics" / "notes.txt").write_text("theirs")
    victim.chmod(0o755)
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    (sockets / "hero_embedder_provider").symlink_to(victim)
    code, log = _start_and_exit(tmp_path, built_root, sockets)
    assert code == 2, log[-2000:]
    assert "is a symbolic link" in log and "PATH_SOCKETS" in log, log[-2000:]
    assert victim.stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in (victim / ".metrics").iterdir()) == ["counter_1.db", "notes.txt"]
    assert not any(p.suffix == ".sock" for p in victim.iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_a_directory_of_another_user_stops_the_start(tmp_path: Path, built_root: Path) -> None:
    sockets = tmp_path / "sockets"
    theirs = sockets / "hero_embedder_provider"
    (theirs / ".metrics").mkdir(parents=True)
    (theirs / ".metrics" / "counter_1.db").write_text("theirs")
    for p in (theirs, theirs / ".metrics"):
        p.chmod(0o777)
        os.chown(p, 65534, 65534)
    code, log = _start_and_exit(tmp_path, built_root, sockets)
    assert code == 2, log[-2000:]
    assert "owned by" in log and "uid 65534" in log, log[-2000:]
    assert theirs.stat().st_uid == 65534 and theirs.stat().st_mode & 0o777 == 0o777
    assert (theirs / ".metrics" / "counter_1.db").read_text() == "theirs"
    assert not any(p.suffix == ".sock" for p in theirs.iterdir())
