"""Process and machine facts for `mem_info`: every worker's and the master's memory."""

from __future__ import annotations

import os
from typing import Any

import psutil


def _proc(p: psutil.Process) -> dict[str, Any]:
    with p.oneshot():
        full = p.memory_full_info() if hasattr(p, "memory_full_info") else None
        mem = p.memory_info()
        out: dict[str, Any] = {"pid": p.pid, "rss": mem.rss, "vms": mem.vms}
        if full is not None:
            # uss: pages only this process has; shared: pages also mapped elsewhere.
            out["uss"] = getattr(full, "uss", None)
            out["shared"] = getattr(mem, "shared", None)
            out["pss"] = getattr(full, "pss", None)
        return out


def mem_info(master_pid: int | None = None) -> dict[str, Any]:
    """RSS of the master and each of its children (the workers), and system RAM.

    Any worker answers the same, since it reads the whole process tree from the master.
    """
    me = psutil.Process(os.getpid())
    master = psutil.Process(master_pid) if master_pid else me
    workers: list[dict[str, Any]] = []
    master_info: dict[str, Any] | None = None
    try:
        if master.pid != me.pid:
            master_info = _proc(master)
            for child in master.children(recursive=False):
                try:
                    workers.append(_proc(child))
                except psutil.Error:
                    continue
        else:
            workers.append(_proc(me))
    except psutil.Error:
        workers = [_proc(me)]
    vm = psutil.virtual_memory()
    return {
        "master": master_info,
        "workers": sorted(workers, key=lambda w: w["pid"]),
        "answered_by": me.pid,
        "system": {"total": vm.total, "available": vm.available, "used": vm.used},
    }
