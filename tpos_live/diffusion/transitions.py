"""Transitions between two prepared scenes: every per-scene tensor slerped, one fraction per frame.

A scene switch crossfades in latent and condition space, not in pixels: each frame of the fade
renders from ``slerp(z^delta_a, z^delta_b, alpha)`` with ``slerp(c_text_a, c_text_b, alpha)`` (and
the null condition, step noise and PLMS history alike), guided by the audio as usual, so the picture
morphs from one scene into the other without a blend of two images and without a black frame.

The first guided step's cached text and null predictions are slerped as well instead of being
recomputed at the blended latent: a transition frame costs no more UNet work than any other frame,
and both ends of the fade are exactly the two scenes.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from tpos_live.diffusion.renderer import Scene
from tpos_live.diffusion.slerp import slerp
from tpos_live.diffusion.uploads import upload


def can_blend(a: Scene, b: Scene) -> bool:
    """Whether two scenes share their steps and shapes (else a switch cannot morph: it fades pixels)."""
    return (a.trajectory == b.trajectory and a.z_delta.shape[1:] == b.z_delta.shape[1:]
            and a.text.shape[1:] == b.text.shape[1:] and len(a.history) == len(b.history))


def blend_scenes(a: Scene, b: Scene, alphas: torch.Tensor) -> Scene:
    """The scene between ``a`` (alpha 0) and ``b`` (alpha 1) for each alpha of a batch of frames.

    Returns a scene whose tensors hold one state per frame (leading size ``len(alphas)``); ``a`` and
    ``b`` may themselves hold one state or that many. Raises ValueError when they cannot blend.
    """
    if not can_blend(a, b):
        raise ValueError(f"scenes {a.trajectory} and {b.trajectory} do not share steps and shapes: they "
                         f"cannot be blended")
    alphas = upload(alphas.reshape(-1), b.z_delta.device, torch.float64)  # once, not once per tensor
    step_noise = _mix(a.step_noise.transpose(0, 1), b.step_noise.transpose(0, 1), alphas).transpose(0, 1)
    return replace(
        b,
        text=_mix(a.text, b.text, alphas),
        null=_mix(a.null, b.null, alphas),
        z_start=_mix(a.z_start, b.z_start, alphas),
        step_noise=step_noise,
        z_delta=_mix(a.z_delta, b.z_delta, alphas),
        history=tuple(_mix(ha, hb, alphas) for ha, hb in zip(a.history, b.history, strict=True)),
        eps_null_first=_mix(a.eps_null_first, b.eps_null_first, alphas),
        eps_text_first=_mix(a.eps_text_first, b.eps_text_first, alphas),
    )


def _mix(a: torch.Tensor, b: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Slerp per batch item: ``a`` and ``b`` (1 or B, ...) to (B, ...), each item one vector."""
    batch = len(alphas)
    shape = (batch, *a.shape[1:])
    flat_a = a.expand(shape).reshape(batch, -1)
    flat_b = b.expand(shape).reshape(batch, -1)
    return slerp(flat_a, flat_b, alphas.to(a.device)).reshape(shape)
