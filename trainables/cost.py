"""What a trained classifier costs to run: latency at batch 1, throughput in bulk, peak memory.

Measured the way deployments are judged (timm's ``benchmark.py``, MLPerf's single-stream and offline
scenarios): warm-up runs first (allocator, oneDNN/cuDNN kernel choice), then the median of many timed
calls at batch 1, and images per second at a large batch. Inputs are uint8 images as decoded, so the
normalization inside ``Classifier`` is part of what is timed, as it is for a user.
"""

from __future__ import annotations

import ctypes
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from trainables.inference import Classifier



@dataclass(frozen=True)
class Effort:
    """How long a measurement runs: warm-up calls, timed calls at batch 1, and bulk calls (images per call on a CPU
    and on a GPU; repeated until ``bulk_seconds`` are spent, at least ``bulk_calls`` times)."""

    latency_runs: int = 50  # the floor a latency median is judged on
    warmup_runs: int = 10
    bulk_batch: tuple[int, int] = (64, 256)
    bulk_seconds: float = 1.0
    bulk_calls: int = 3


FULL = Effort()
# --smoke's: the path measured, not a figure to quote (a smoke's six bundles cost 24 s of two cores in full, a tenth of
# the whole command); the rows say how many calls the latency is the median of (``cost_latency_runs``).
QUICK = Effort(latency_runs=10, warmup_runs=2, bulk_batch=(16, 64), bulk_seconds=0.0, bulk_calls=1)


@dataclass
class RunCost:
    """One classifier's cost to run on one device (``finalists.parquet`` columns, ``cost_`` prefixed)."""

    device: str  # "cpu" or the GPU's name
    threads: int  # torch's CPU threads during the measurement
    latency_ms: float  # median of ``latency_runs`` calls at batch 1
    latency_runs: int
    latency_p90_ms: float
    throughput_ips: float  # images per second at ``bulk_batch``
    bulk_batch: int
    # CUDA: max allocated during the bulk calls (weights, inputs and activations); CPU: the weights' size plus the
    # resident-set growth during the bulk calls (inputs, activations and scratch), freed heap handed back first
    peak_memory_mb: float
    memory_kind: str  # "cuda_max_allocated" or "rss_growth" ("rss_growth_unmeasured": no /proc, NaN)

    def columns(self) -> dict[str, float | int | str]:
        return {f"cost_{k}": v for k, v in asdict(self).items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(classifier: Classifier, images: torch.Tensor) -> float:
    started = time.perf_counter()
    classifier(images)
    _sync(images.device)
    return time.perf_counter() - started


def _status_kib(field: str) -> int | None:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM), where Linux gives it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_rss_peak() -> bool:
    """Hand freed heap memory back to the system (glibc keeps it otherwise, and a call would reuse it unseen),
    then reset the process's resident-set high-water mark (Linux: ``5`` into clear_refs)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def weights_mb(module: torch.nn.Module) -> float:
    """Megabytes (MiB) of a module's parameters and buffers."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


@torch.no_grad()
def measure(classifier: Classifier, channels: int, size: int, device: torch.device | str,
            bulk_batch: int | None = None, effort: Effort = FULL) -> RunCost:
    """Latency, throughput and peak memory of ``classifier`` on ``device`` (it is moved there), fed random
    uint8 images of ``channels`` x ``size`` x ``size``, as long as ``effort`` says."""
    device = torch.device(device)
    classifier.eval().to(device)
    generator = torch.Generator().manual_seed(0)
    one = torch.randint(0, 256, (1, channels, size, size), dtype=torch.uint8, generator=generator).to(device)
    for _ in range(effort.warmup_runs):
        _timed(classifier, one)
    times = sorted(_timed(classifier, one) for _ in range(effort.latency_runs))
    batch = bulk_batch or effort.bulk_batch[device.type == "cuda"]
    bulk = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8, generator=generator).to(device)
    _timed(classifier, bulk)  # warm-up at this shape
    memory_kind, before = _memory_start(device)
    if memory_kind == "rss_growth":
        before -= weights_mb(classifier) * 1024  # the weights count as they would in a process of their own
    spent, calls = 0.0, 0
    while calls < effort.bulk_calls or spent < effort.bulk_seconds:
        spent += _timed(classifier, bulk)
        calls += 1
    return RunCost(device=_device_name(device), threads=torch.get_num_threads(),
                   latency_ms=1000 * statistics.median(times), latency_runs=len(times),
                   latency_p90_ms=1000 * times[int(0.9 * len(times))],
                   throughput_ips=batch * calls / spent, bulk_batch=batch,
                   peak_memory_mb=_memory_peak(device, memory_kind, before), memory_kind=memory_kind)


def _memory_start(device: torch.device) -> tuple[str, float]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda_max_allocated", 0.0
    if _reset_rss_peak():
        return "rss_growth", float(_status_kib("VmRSS") or 0)
    return "rss_growth_unmeasured", 0.0


def _memory_peak(device: torch.device, kind: str, before: float) -> float:
    if kind == "cuda_max_allocated":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if kind == "rss_growth":
        return max(0.0, (float(_status_kib("VmHWM") or 0) - before)) / 1024
    return float("nan")


def _device_name(device: torch.device) -> str:
    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else "cpu"
