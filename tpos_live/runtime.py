"""Device and precision choice, said out loud: no silent fallback."""

from __future__ import annotations

import torch

from tpos_live.errors import UserError
from tpos_live.names import DEVICE_NAMES_HELP

NO_MPS = "this machine has no Apple GPU (MPS)"


def mps_available() -> bool:
    """Whether torch can run on an Apple GPU here (Metal Performance Shaders)."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str, dtype: str) -> tuple[str, str]:
    """Turn "auto" choices into a concrete device and dtype; refuse what this machine cannot do.

    "auto" is CUDA where there is a CUDA GPU, else an Apple GPU (MPS), else the CPU; the auto dtype
    is float16 on either GPU. (MPS is not verified by the project's tests: no Mac runs them.)
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--compute-device {device} was asked for but this torch build sees no CUDA GPU: "
                        "use --compute-device cpu (or install a CUDA build of torch)")
    elif device == "mps" and not mps_available():
        raise UserError(f"{NO_MPS}: --compute-device mps needs a Mac with Apple silicon (or an AMD GPU) and "
                        "torch 2 or later; use --compute-device cpu (or auto)")
    elif device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise UserError(f"unknown device {device!r}: use {DEVICE_NAMES_HELP}")
    if dtype == "auto":
        dtype = "float16" if device.startswith("cuda") or device == "mps" else "float32"
    if dtype == "float16" and device == "cpu":
        raise UserError("float16 is slow and inexact on the CPU: use --dtype bfloat16 or float32")
    return device, dtype
