"""Spherical interpolation: how a scene transition blends latents and conditions, and how conditions
between two moments of the sound are mixed (``tpos_live.conditioning.interpolate``)."""

from __future__ import annotations

import torch


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
