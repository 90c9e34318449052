"""Audio Semantic Guidance, TPoS equations (6) and (7), built on SEGA (Brack et al. 2023).

    eps~ = eps(z, c_null) + g (eps(z, c_text) - eps(z, c_null)) + lambda
    lambda = mask_q(g_s (eps(z, c_n) - eps(z, c_null))) + sigma_m Phi_m

Where the paper, the official code and diffusers' SemanticStableDiffusionPipeline differ, we follow:
- the quantile mask of SEGA / the official code: per (batch, channel) over the spatial positions,
  keeping entries with |edit| >= the q-quantile (computed in float32, like diffusers);
- the momentum update of SEGA / the official code: edit' = edit + sigma_m v, v = beta v + (1 - beta) edit';
- the official code for *when* momentum starts: at the first guided step. SEGA also accumulates momentum
  during its warm-up steps, which would need eps(z, c_n) at every text-only step of every frame and so
  forbid computing z^delta once; with sigma_m = 0 or delta = 0 the two agree exactly (tests/test_guidance_sega.py).
"""

from __future__ import annotations

import torch

from tpos_live.config import GuidanceParams


def quantile_mask(edit: torch.Tensor, threshold: float) -> torch.Tensor:
    """Zero the entries of ``edit`` (B, C, H, W) below the per-(B, C) quantile of |edit| over H x W."""
    magnitude = edit.abs().flatten(start_dim=2).float()
    cutoff = _quantile(magnitude, threshold).to(edit.dtype)
    return torch.where(edit.abs() >= cutoff[:, :, None, None], edit, 0.0)


def _quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(values, q, dim=-1)`` (linear interpolation), by selection instead of a full sort:
    the same order statistics (``kthvalue``) at the same ranks, computed as torch does (in float32),
    and the same interpolation, so the result is identical."""
    n = values.shape[-1]
    rank = float(torch.tensor(q, dtype=torch.float32) * (n - 1))
    below = int(rank)
    low = values.kthvalue(below + 1, dim=-1).values
    weight = rank - below
    if weight == 0.0:
        return low
    high = values.kthvalue(min(below + 2, n), dim=-1).values
    # A Python weight, not a tensor made on the device: that would be a blocking upload every frame.
    return torch.lerp(low, high, weight)


def text_guided(eps_null: torch.Tensor, eps_text: torch.Tensor, text_scale: float) -> torch.Tensor:
    """Classifier-free guidance, the first line of equation (6)."""
    return eps_null + text_scale * (eps_text - eps_null)


def audio_guided(
    eps_null: torch.Tensor,
    eps_text: torch.Tensor,
    eps_audio: torch.Tensor,
    audio_scales: torch.Tensor,
    params: GuidanceParams,
    momentum: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One guided step: equation (6) with lambda from equation (7).

    ``audio_scales`` (B,) is g_s per frame (g_s times the loudness envelope). Returns the guided
    prediction and the updated momentum; pass ``momentum=None`` at a frame's first guided step.
    """
    scales = audio_scales.to(eps_audio.dtype)[:, None, None, None]
    edit = quantile_mask((eps_audio - eps_null) * scales, params.threshold)
    if momentum is None:
        momentum = torch.zeros_like(edit)
    edit = edit + params.momentum_scale * momentum
    momentum = params.momentum_beta * momentum + (1 - params.momentum_beta) * edit
    return text_guided(eps_null, eps_text, params.text_scale) + edit, momentum


def joint_guided(
    eps_null: torch.Tensor,
    eps_text: torch.Tensor,
    eps_audio: torch.Tensor,
    eps_edit: torch.Tensor,
    audio_scales: torch.Tensor,
    edit_scale: float,
    params: GuidanceParams,
    momentum: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`audio_guided` with a second edit concept, the paper's joint text + audio conditioning.

    ``eps_edit`` is the prediction for the edit prompt's encoding. Each concept's edit is scaled and
    masked on its own (same threshold q), the two are summed (SEGA's concept sum with weights 1), and
    momentum acts on the sum, as in diffusers' SemanticStableDiffusionPipeline with two concepts.
    """
    scales = audio_scales.to(eps_audio.dtype)[:, None, None, None]
    edit = (quantile_mask((eps_audio - eps_null) * scales, params.threshold)
            + quantile_mask((eps_edit - eps_null) * edit_scale, params.threshold))
    if momentum is None:
        momentum = torch.zeros_like(edit)
    edit = edit + params.momentum_scale * momentum
    momentum = params.momentum_beta * momentum + (1 - params.momentum_beta) * edit
    return text_guided(eps_null, eps_text, params.text_scale) + edit, momentum
