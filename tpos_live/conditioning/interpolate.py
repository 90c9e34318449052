"""From a condition track to one condition per frame: slerp between consecutive conditions."""

from __future__ import annotations

import numpy as np
import torch

from tpos_live.conditioning.base import ConditionTrack
from tpos_live.diffusion.slerp import slerp

__all__ = ["SlerpPair", "conditions_at", "slerp", "track_positions"]


class SlerpPair:
    """:func:`slerp` from ``a`` to ``b`` at many fractions, for the live engine's per-frame mix.

    The angle is computed once, in float64, from host copies (``a_host``, ``b_host``); each call then
    only weighs the two conditions, which stay on their device, into a buffer kept for the next call
    (a GPU does two fused multiply-adds; nothing is uploaded). Same weights as :func:`slerp`; the sum
    is taken in the conditions' dtype.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, a_host: torch.Tensor, b_host: torch.Tensor,
                 dot_threshold: float = 0.9995) -> None:
        a64, b64 = a_host.double().flatten(), b_host.double().flatten()
        cos = float(a64 @ b64) / max(float(a64.norm() * b64.norm()), 1e-300)
        cos = 1.0 if np.isnan(cos) else min(max(cos, -1.0), 1.0)
        self.parallel = abs(cos) > dot_threshold
        self.theta = float(np.arccos(cos))
        self.a, self.b = a, b
        self._out: torch.Tensor | None = None

    def weights(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The weights of ``a`` and ``b`` (each (B,) float64) at fractions ``t``."""
        t = np.asarray(t, dtype=np.float64)
        if self.parallel:
            return 1 - t, t
        sin = np.sin(self.theta)
        return np.sin((1 - t) * self.theta) / sin, np.sin(t * self.theta) / sin

    def __call__(self, t: np.ndarray) -> torch.Tensor:
        """``(B, *a.shape)``: the mix at each fraction in ``t`` (a view of a reused buffer: use it
        before the next call)."""
        wa, wb = self.weights(t)
        batch = len(wa)
        out = self._out
        if out is None or out.shape[0] != batch:
            out = self._out = torch.empty((batch, *self.a.shape), dtype=self.a.dtype, device=self.a.device)
        for i in range(batch):  # two scalar fused ops per frame: no weight tensor to upload
            torch.mul(self.a, float(wa[i]), out=out[i])
            out[i].add_(self.b, alpha=float(wb[i]))
        return out


def track_positions(track_times: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each time in ``times`` falls in a track of condition times: the indices of the conditions
    before and after it and the fraction of the time elapsed between them (each (F,)).

    Before the first and after the last condition time the nearest condition holds (fraction 0 or 1).
    """
    times = np.asarray(times, dtype=np.float64)
    k = len(track_times)
    upper = np.searchsorted(track_times, times, side="right").clip(1, max(k - 1, 1))
    lower = upper - 1
    if k == 1:
        upper = lower = np.zeros_like(upper)
    span = track_times[upper] - track_times[lower]
    fraction = np.where(span > 0, (times - track_times[lower]) / np.where(span > 0, span, 1.0), 0.0).clip(0, 1)
    return lower, upper, fraction


def conditions_at(track: ConditionTrack, times: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """The condition (F, 77, D) and attention weight (F,) at each time in ``times`` (seconds).

    Between two condition times the condition is slerped by the fraction of time elapsed;
    before the first and after the last the nearest condition holds.
    """
    lower, upper, fraction = track_positions(track.times, times)
    k = len(track.times)
    shape = track.conditions.shape[1:]
    flat = track.conditions.reshape(k, -1)
    mixed = slerp(flat[lower], flat[upper], torch.from_numpy(fraction))
    weights = (1 - fraction) * track.weights[lower] + fraction * track.weights[upper]
    return mixed.reshape(len(fraction), *shape), weights
