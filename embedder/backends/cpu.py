"""What CPU this is: its model name and the vector extensions the runtimes' kernels choose
from, read from /proc/cpuinfo in one place, for the backend choice's cache key and for what
the benchmark reports (so both name the same machine the same way).

Whether OpenVINO computes in BF16 here is the CPU plugin's to say (`openvino.bf16_units`);
the flags below only name the units a report mentions (a kernel may know units the flags of
an older kernel do not show, or the reverse).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# The extensions that change which kernels ONNX Runtime and OpenVINO run, in report order.
ISA = (
    *("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni"),
    *("amx_tile", "amx_int8", "amx_bf16"),
)
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # units that compute in BF16 natively
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")  # units with integer dot products

CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Cpu:
    model: str  # "model name" ("unknown" where there is no /proc)
    flags: tuple[str, ...]  # those of `ISA` this CPU has, in `ISA`'s order
    # "family 25 model 1 stepping 1": what names the generation where "model name" does not
    # (a VM's "AMD EPYC"); for reports, not in `key`
    ident: str = ""

    @property
    def key(self) -> str:
        """The model and its extensions in one string (a cloud's "model name" can be the same
        for two generations)."""
        return " ".join([self.model, *self.flags])

    @property
    def bf16(self) -> tuple[str, ...]:
        return tuple(f for f in BF16_FLAGS if f in self.flags)

    @property
    def int8(self) -> tuple[str, ...]:
        return tuple(f for f in INT8_FLAGS if f in self.flags)


def read_cpu(cpuinfo: Path = CPUINFO) -> Cpu:
    """This machine's CPU (`cpu()` reads it once per process)."""
    name, flags = platform.processor() or "unknown", set[str]()
    ident: dict[str, str] = {}
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and value:
                name = value
            elif key in ("cpu family", "model", "stepping"):
                ident.setdefault(key.removeprefix("cpu "), value)
            elif key == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    said = " ".join(f"{k} {v}" for k, v in ident.items())
    return Cpu(name, tuple(f for f in ISA if f in flags), said)


@cache
def cpu() -> Cpu:
    return read_cpu()
