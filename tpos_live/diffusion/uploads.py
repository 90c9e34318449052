"""Host tensors onto the compute device without making the host wait for the device.

A plain ``tensor.to("cuda")`` from pageable host memory makes the host wait until every kernel queued
on the current stream has run (torch synchronises the stream after such a copy). A frame's inputs come
from the host (its audio conditions, scales, interpolation fraction), so uploading them that way would
stop the host from queueing the next frame while the GPU works on this one. Staged in pinned memory and
copied with ``non_blocking``, the copy is queued like a kernel; torch's pinned-memory allocator keeps the
staging buffer until the copy has run, so the caller may reuse or free its tensor at once.
"""

from __future__ import annotations

import torch


def upload(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``tensor.to(device, dtype)``, queued instead of waited for when ``tensor`` is on the host."""
    if tensor.device.type != "cpu" or device.type == "cpu":
        return tensor.to(device, dtype)
    staged = tensor if dtype is None else tensor.to(dtype)  # converted here: the copy moves the final bytes
    if device.type == "cuda":
        staged = staged.pin_memory()
    # MPS keeps torch's default copy: its non-blocking copies are unverified here. Other devices (and the
    # tests' stand-in, "meta") take the CUDA path's non-blocking copy.
    return staged.to(device, non_blocking=device.type != "mps")
