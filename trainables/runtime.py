"""How a trial runs, as opposed to what it trains: its device, its share of the CPU, and the
speed switches (bf16 autocast, channels_last) in ``Runtime``."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from dataclasses import dataclass

import torch
from torch import nn


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


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether oneDNN has fast bf16 kernels on this CPU (AVX-512 BF16/AMX class processors).

    Without them CPU autocast would emulate bf16 slowly, so mixed precision stays off there.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the check
        return False


@dataclass(frozen=True)
class Runtime:
    """How to run, as opposed to what to train: device and speed switches, not hyperparameters."""

    device: torch.device
    amp: bool = True  # bf16 autocast where the device has fast bf16 (recent GPUs; CPUs, see below)
    channels_last: bool = True  # faster convolutions on CPU (about 1.4x) and on tensor cores
    # On CPUs bf16 pays off for convolutions (the CNN: 1.7x) but slows small matmuls (the ViT: 0.7x);
    # on an H100 it speeds up VGG16 and AlexNet but slows the small CNN and ViT (launch-bound). A
    # model's registry entry says where to use it (``ModelSpec.cpu_bf16``, ``ModelSpec.gpu_bf16``).
    cpu_bf16: bool = False
    gpu_bf16: bool = True

    def place(self, model: nn.Module) -> nn.Module:
        """``model`` on this device, in channels_last layout when that is on."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def for_model(self, spec) -> "Runtime":
        """This runtime with the bf16 choices of the model ``spec``."""
        return dataclasses.replace(self, cpu_bf16=spec.cpu_bf16, gpu_bf16=spec.gpu_bf16)

    @functools.cached_property
    def precision(self) -> str:
        """``bf16`` when matrix work runs under bf16 autocast, else ``fp32``; recorded in results."""
        if not self.amp:
            return "fp32"
        if self.device.type == "cuda":
            return "bf16" if self.gpu_bf16 and torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if self.device.type == "cpu" and self.cpu_bf16 and cpu_supports_bf16() else "fp32"

    @property
    def autocast(self) -> contextlib.AbstractContextManager:
        # Convolutions and matmuls in bf16, reductions, norms and the loss in fp32 (autocast's lists);
        # bf16 keeps fp32's range, so no loss scaling is needed.
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()
