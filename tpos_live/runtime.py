"""Device and precision choice, said out loud: no silent fallback."""

from __future__ import annotations

import torch

from tpos_live.errors import UserError


def resolve_device(device: str, dtype: str) -> tuple[str, str]:
    """Turn "auto" choices into a concrete device and dtype; refuse what this machine cannot do."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--compute-device {device} was asked for but this torch build sees no CUDA GPU: "
                        "use --compute-device cpu (or install a CUDA build of torch)")
    elif device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto")
    if dtype == "auto":
        dtype = "float16" if device.startswith("cuda") else "float32"
    if dtype == "float16" and device == "cpu":
        raise UserError("float16 is slow and inexact on the CPU: use --dtype bfloat16 or float32")
    return device, dtype
