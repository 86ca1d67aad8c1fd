"""The benchmark's side of a peer child (`peer_serve`): start it, ask it one thing at a time,
every wait bounded; a child that does not answer in time, dies or reports an error is killed,
and the caller reports that peer as not measured and goes on with the others."""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class PeerFailed(Exception):
    """The child is gone or useless; the message says why (with its stderr's tail)."""


class Child:
    """One peer child, started at once; `ready` waits for its first line."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path | None = None
    ) -> None:
        self.name = name
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self._buf = b""
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env=dict(env),
            cwd=cwd,
        )

    def ready(self, timeout: float) -> dict[str, Any]:
        """What the child says of itself once loaded and warmed up."""
        return self._read(timeout)

    def ask(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write((json.dumps(message) + "\n").encode())
            stdin.flush()
        except (BrokenPipeError, OSError):
            raise PeerFailed(f"{self.name} has exited: {self._stderr_tail()}") from None
        return self._read(timeout)

    def _read(self, timeout: float) -> dict[str, Any]:
        stdout = self.proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise PeerFailed(f"{self.name} gave no answer in {timeout:g} s")
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self.kill()
                raise PeerFailed(f"{self.name} has exited: {self._stderr_tail()}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            self.kill()
            raise PeerFailed(f"{self.name} said {line[:200]!r}") from None
        if not isinstance(message, dict) or "error" in message:
            self.kill()
            error = message.get("error") if isinstance(message, dict) else message
            raise PeerFailed(f"{self.name}: {error} {self._stderr_tail()}".strip())
        return message

    def _stderr_tail(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace").strip()[-500:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """Asks the child to quit, kills it if it has not within 10 s; always reaped."""
        if self.proc.poll() is None:
            self._quit()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self._err.close()

    def _quit(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(b'{"do": "quit"}\n')
            stdin.flush()
        except (BrokenPipeError, OSError):
            pass
