"""The pip configuration a container build needs, taken from this machine's own.

`make container` runs this before `podman build`: pip inside the build must reach the index the
way pip here does (the same index URLs, proxy, timeout, and the certificate file that `cert`
names, e.g. a private CA). Only those settings carry over; paths that exist only on this machine
(file:// indexes, find-links, constraint files) are left out. Nothing here names a host: the
values are read from `pip config list` (config files and PIP_* variables) at build time.

Usage: python3 deploy/pip_build_config.py OUTDIR  ->  OUTDIR/pip.conf and OUTDIR/pip-cert
(pip-cert is empty when no certificate is configured; the build then keeps its own store).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

KEPT = ("index-url", "extra-index-url", "trusted-host", "proxy", "timeout", "retries")
SECRET_CERT = "/run/secrets/pip-cert"  # where the Containerfile's secret mount puts it


def pip_settings() -> dict[str, str]:
    """key -> value as pip resolves them here; PIP_* variables override the files."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in out.splitlines():
        m = re.fullmatch(r"(:env:|[\w-]+)\.([\w-]+)='(.*)'", line.strip())
        if m:
            section, key, value = m.groups()
            key = "timeout" if key == "default-timeout" else key
            (env if section == ":env:" else files)[key] = value
    return {**files, **env}


def main(outdir: Path) -> None:
    settings = pip_settings()
    outdir.mkdir(parents=True, exist_ok=True)
    lines = ["[global]"]
    for key in KEPT:
        urls = [v for v in settings.get(key, "").split() if not v.startswith("file:")]
        if urls:
            lines.append(f"{key} = {' '.join(urls)}")
    cert = outdir / "pip-cert"
    cert.write_bytes(b"")
    if (named := settings.get("cert")) and Path(named).is_file():
        shutil.copyfile(named, cert)
        lines.append(f"cert = {SECRET_CERT}")
    (outdir / "pip.conf").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
