"""From a condition track to one condition per frame: slerp between consecutive conditions."""

from __future__ import annotations

import numpy as np
import torch

from tpos_live.conditioning.base import ConditionTrack


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, dot_threshold: float = 0.9995) -> torch.Tensor:
    """Spherical interpolation between rows of ``a`` and ``b`` (..., N) at fractions ``t`` (...,).

    Each condition is treated as one vector (as in Ramesh et al., whom TPoS follows); nearly parallel
    pairs fall back to linear interpolation, where slerp's sin(theta) would divide by ~0.
    """
    a64, b64, t64 = a.double(), b.double(), t.double()[..., None]
    cos = (a64 * b64).sum(-1, keepdim=True) / (a64.norm(dim=-1, keepdim=True) * b64.norm(dim=-1, keepdim=True))
    cos = torch.nan_to_num(cos, nan=1.0).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    parallel = cos.abs() > dot_threshold
    safe_sin = torch.where(parallel, torch.ones_like(sin), sin)
    spherical = (torch.sin((1 - t64) * theta) * a64 + torch.sin(t64 * theta) * b64) / safe_sin
    linear = (1 - t64) * a64 + t64 * b64
    return torch.where(parallel, linear, spherical).to(a.dtype)


def conditions_at(track: ConditionTrack, times: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """The condition (F, 77, D) and attention weight (F,) at each time in ``times`` (seconds).

    Between two condition times the condition is slerped by the fraction of time elapsed;
    before the first and after the last the nearest condition holds.
    """
    times = np.asarray(times, dtype=np.float64)
    k = len(track.times)
    upper = np.searchsorted(track.times, times, side="right").clip(1, max(k - 1, 1))
    lower = upper - 1
    if k == 1:
        upper = lower = np.zeros_like(upper)
    span = track.times[upper] - track.times[lower]
    fraction = np.where(span > 0, (times - track.times[lower]) / np.where(span > 0, span, 1.0), 0.0).clip(0, 1)
    shape = track.conditions.shape[1:]
    flat = track.conditions.reshape(k, -1)
    mixed = slerp(flat[lower], flat[upper], torch.from_numpy(fraction))
    weights = (1 - fraction) * track.weights[lower] + fraction * track.weights[upper]
    return mixed.reshape(len(times), *shape), weights
