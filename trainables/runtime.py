"""Where a trial runs: its device and its share of the CPU."""

from __future__ import annotations

import os

import torch


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` if given, else the first CUDA device if there is one, else the CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def set_threads(cpus: float | None) -> int:
    """Give torch as many threads as the CPUs this process was allotted (all cores if ``None``).

    Without this, every concurrent trial starts one thread per core and they fight over them.
    """
    threads = max(1, int(cpus)) if cpus else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return threads


def describe(device: torch.device) -> str:
    """What a result ran on, for the exports: ``cpu`` or the GPU's model name."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return "cpu"
