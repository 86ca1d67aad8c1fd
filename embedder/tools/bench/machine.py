"""What machine the numbers come from, and how busy other processes kept it meanwhile."""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import psutil

from embedder.backends.cpu import cpu


def cpu_model() -> str:
    return cpu().model


def cpu_flags() -> list[str]:
    """The vector extensions that matter to the runtimes' kernels (the backend choice's
    reading of the CPU, so the report and the kept choices name the machine alike)."""
    return list(cpu().flags)


def bf16_units() -> list[str]:
    """The CPU's BF16 units (empty: none; torch then emulates bf16, slowly), as the backend
    choice reads them."""
    return list(cpu().bf16)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cpu_flags": flags,
        "bf16_units": bf16_units(),
        "cores": cores(),
        "memory_gib": round(vm.total / 2**30, 1),
        "onnxruntime": _version("onnxruntime"),
        "tokenizers": _version("tokenizers"),
        "gunicorn": _version("gunicorn"),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _own_cpu() -> float:
    """CPU seconds of this process and its waited-for children (gunicorn's workers are
    reaped by the master, which this process reaps: they count too)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += float(ru.ru_utime + ru.ru_stime)
    return total


def _busy() -> float:
    t = psutil.cpu_times()
    return float(sum(t)) - float(t.idle) - float(getattr(t, "iowait", 0.0))


def _rusage(who: int) -> float:
    ru = resource.getrusage(who)
    return float(ru.ru_utime + ru.ru_stime)


@dataclass
class Others:
    """How much of the machine other processes took during one measurement: the machine's busy
    CPU time less this process's, its reaped children's and `ours` (e.g. the server's)."""

    started: float = field(default_factory=time.monotonic)
    busy0: float = field(default_factory=_busy)
    self0: float = field(default_factory=lambda: _rusage(resource.RUSAGE_SELF))
    children0: float = field(default_factory=lambda: _rusage(resource.RUSAGE_CHILDREN))

    def share(self, ours: float = 0.0) -> float:
        wall = time.monotonic() - self.started
        mine = _rusage(resource.RUSAGE_SELF) - self.self0
        mine += _rusage(resource.RUSAGE_CHILDREN) - self.children0
        others = max(0.0, _busy() - self.busy0 - mine - ours)
        return others / (wall * cores()) if wall > 0 else 0.0


@dataclass
class Noise:
    """CPU that processes other than the benchmark's took while it ran (a shared machine)."""

    started: float = field(default_factory=time.monotonic)
    busy0: float = field(default_factory=_busy)
    own0: float = field(default_factory=_own_cpu)
    load0: tuple[float, float, float] = field(default_factory=os.getloadavg)

    def report(self) -> dict[str, Any]:
        wall = time.monotonic() - self.started
        others = max(0.0, (_busy() - self.busy0) - (_own_cpu() - self.own0))
        share = others / (wall * cores()) if wall > 0 else 0.0
        return {
            "wall_s": wall,
            "other_cpu_s": others,
            "other_share": share,
            "load_before": list(self.load0),
            "load_after": list(os.getloadavg()),
            "disturbed": share > 0.10,
        }
