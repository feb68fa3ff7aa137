"""Devices: which one a run trains on, what it is called in records, and its precision.

On CUDA the forward pass runs under bf16 autocast; on CPU it is float32, on CPU_THREADS threads, and
deterministic for a given seed. Everything that changes a run's numbers is in its key or pinned here: the
device type is in the key; the precision and the CPU thread count are fixed by this module, so a run trained
by `mupcheck run`, a pytest-xdist worker or a Ray task gives the same numbers under the same key (issue 28:
Ray tasks trained with one thread and local runs with two, and 111 of the smoke grid's 144 losses differed,
by up to 0.099, under the same keys). GPU kernels are not bit-reproducible (0.2-3.7% between reruns of one
seed on an H100); deterministic-algorithms mode is not used, and the records say so by their device.
"""

from __future__ import annotations

import contextlib
import os

import torch

from mupcheck.errors import ModelError

__all__ = ["CPU_THREADS", "autocast", "device_name", "pin_device", "pin_threads", "resolve_device", "select_gpu",
           "synchronize"]

# Intra-op threads of a run on CPU. One: a CPU sweep runs one process per core instead (on this project's
# 2-core machine the smoke grid took 47 s as two one-thread processes, 62 s as one two-thread process).
CPU_THREADS = 1

# Batched groups allocate tensors of many sizes, and free rows as members leave. With torch's default
# CUDA allocator 32 members of the gpu_reference GPT at width 1024 ran out of memory on an H100 with
# 37 GiB reserved but unallocated (fragmentation). Read when CUDA first allocates; a user's setting wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as torch spells it."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but torch sees no CUDA device")
    return dev


def device_name(device: torch.device) -> str:
    """'cuda: NVIDIA H100 80GB HBM3' or 'cpu: 2 thread(s)', as records and reports show it."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {torch.get_num_threads()} thread(s)"


def pin_threads(device: torch.device) -> None:
    """Train on CPU_THREADS threads when the device is the CPU (every training process calls this first)."""
    if device.type == "cpu":
        torch.set_num_threads(CPU_THREADS)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pin_device(device: torch.device, worker: int) -> torch.device:
    """Worker i's GPU: cuda:(i mod GPUs) when the device is plain "cuda" and there are several GPUs;
    an explicit cuda:N, a single GPU or the CPU are left as they are."""
    if device.type != "cuda" or device.index is not None:
        return device
    count = torch.cuda.device_count()
    return torch.device("cuda", worker % count) if count > 1 else device


def select_gpu(device: torch.device) -> None:
    """Make a pinned worker's GPU the current one, for anything allocated without a device.
    Plain "cuda" (no index) keeps the current GPU: torch.cuda.set_device refuses it."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
