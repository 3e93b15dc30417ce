"""What a benchmark ran on, for the record kept with its figures."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what Python's platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def vector_extensions() -> list[str]:
    """The CPU's vector extensions that decide torch's speed (AVX2, AVX-512, its BF16 and AMX), from
    /proc/cpuinfo: hosts sold under one name differ in them."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    try:
        flags = next(line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return [flag for flag in wanted if flag in flags]


def describe() -> str:
    """One line for a benchmark's record: the CPU, the vector extensions that decide torch's speed on it,
    and the cores."""
    import os

    return f"{cpu_name()} ({', '.join(vector_extensions()) or 'no AVX2'}), {os.cpu_count()} cores"
