"""Render settings: one frozen dataclass, one home for the defaults of both modes.

``fast`` is the real-time recipe (few-step sampler, one guided step, TAESD decode, loudness
envelope on, sliding encoder windows). ``paper`` reproduces the official TPoS settings
(docs/design.md, "The official code"): 50 PLMS steps, text guidance 7.5, s_e 7, threshold 0.8, param_t
900, momentum 0.3 / 0.6, full VAE, no envelope, the official windows. :data:`IMG2IMG_PRESETS` holds the
official img2img settings.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from tpos_live import names
from tpos_live.limits import SEED_LIMIT, SEED_RANGE
from tpos_live.names import DECODERS, FRAME_PATHS, MODES, SAMPLERS, WINDOWS

# g = 1 is the text branch alone (diffusers' guidance_scale <= 1: no classifier-free guidance). Below 1,
# equation (6) swaps part of the prompt's prediction for the null prompt's, and g = 0 drops the prompt
# (every prompt gave the same frames), so it is refused. One home: the live text knob starts here too.
MIN_TEXT_GUIDANCE = 1.0
DELTA_FIELDS = ("delta_timestep", "delta_step")

FPS_RANGE = (1.0, 960.0)
"""The frame-rate caps a render accepts (the live FPS knob, ``tpos_live.live.knobs.FPS``, sweeps the same):
960 lets keyframed frames, one decode each (~1 ms on a GPU), run uncapped by the setting."""


@dataclass(frozen=True)
class GuidanceParams:
    """The knobs of equations (6) and (7) (``tpos_live.diffusion.guidance``), as a render's settings give them."""

    text_scale: float  # g: classifier-free guidance of the prompt (1: the text branch alone; >= 1, MIN_TEXT_GUIDANCE)
    audio_scale: float  # g_s: strength of the audio semantic guidance
    threshold: float  # q: quantile below which edit entries are dropped
    momentum_scale: float  # sigma_m
    momentum_beta: float  # beta of the momentum's moving average

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
        if not 0.0 <= self.momentum_scale <= 1.0:
            raise ValueError(f"momentum scale must be in [0, 1], got {self.momentum_scale}")
        if not 0.0 <= self.momentum_beta < 1.0:
            raise ValueError(f"momentum beta must be in [0, 1), got {self.momentum_beta}")
        if self.text_scale < 0 or self.audio_scale < 0:
            raise ValueError("guidance scales must be >= 0")


@dataclass(frozen=True)
class RenderSettings:
    """Everything that shapes the frames of a render, validated on construction.

    Guidance starts at ``delta_timestep`` (a DDPM timestep: steps with t < delta are guided, like
    the official ``param_t``) or at ``delta_step`` (a step index); exactly one of them is set.

    ``windows``: how a file is cut into encoder windows (``tpos_live.conditioning.windows``):
    ``"official"`` (consecutive windows of N segments, N conditions each, as the official ``txt2img.py``)
    or ``"sliding"`` (one window per hop, ending at each segment: the live path's only choice).
    ``condition_scale``: the MAP input is ``condition_scale * alpha_n * s_n`` (None: N, the paper's
    k = 1; the official img2img uses 20). ``strength``: with an init image, noise it to the timestep of
    this strength (as diffusers' and the official img2img: the last ``int(steps * strength)`` steps run);
    None noises it to delta. ``edit_scale``: the scale of the ``--edit-prompt`` concept (paper mode, when
    not given: the audio guidance, as the official code scales every concept by the same s_e). ``frames``:
    how frames are made (:data:`~tpos_live.names.FRAME_PATHS`; see ``TPoSRenderer.uses_keyframes``).
    """

    mode: str = "fast"
    width: int = 512
    height: int = 512
    fps: float = 24.0
    seed: int = 42
    sampler: str = "lcm"
    steps: int = 4
    text_guidance: float = 1.0
    audio_guidance: float = 7.0
    threshold: float = 0.8
    momentum_scale: float = 0.3
    momentum_beta: float = 0.6
    delta_timestep: int | None = None
    delta_step: int | None = 3
    envelope_depth: float = 0.75
    attack_seconds: float = 0.01
    release_seconds: float = 0.25
    decoder: str = "taesd"
    batch_frames: int = 1
    windows: str = "sliding"
    condition_scale: float | None = None
    strength: float | None = None
    edit_scale: float = 5.0  # SEGA's default edit guidance scale
    frames: str = "auto"
    # The official img2img noises the image at DDIM index t_enc (its stochastic_encode) but denoises from
    # index t_enc - 1: the image carries one step more noise than the first step expects.
    init_noise_one_step_early: bool = False

    def __post_init__(self) -> None:
        _check(self.mode in MODES, f"mode must be one of {MODES}, got {self.mode!r}")
        _check(self.sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        _check(self.decoder in DECODERS, f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        _check(64 <= self.width <= 2048 and 64 <= self.height <= 2048, "size must be 64..2048 per side")
        _check(self.width % 8 == 0 and self.height % 8 == 0, f"size must be a multiple of 8, got "
               f"{self.width}x{self.height}")
        low, high = FPS_RANGE
        _check(low <= self.fps <= high, f"fps must be in {low:g}..{high:g}, got {self.fps}")
        _check(0 <= self.seed < SEED_LIMIT, f"seed must be in {SEED_RANGE}, got {self.seed}")
        _check(1 <= self.steps <= 1000, f"steps must be in 1..1000, got {self.steps}")
        _check((self.delta_timestep is None) != (self.delta_step is None),
               "give exactly one of delta (a timestep) or delta step (a step index)")
        if self.delta_timestep is not None:
            _check(1 <= self.delta_timestep <= 1000, f"delta must be a timestep in 1..1000, got "
                   f"{self.delta_timestep}")
        if self.delta_step is not None:
            _check(0 <= self.delta_step < self.steps, f"delta step must be in 0..{self.steps - 1} "
                   f"(steps - 1), got {self.delta_step}")
        _check(0.0 <= self.envelope_depth <= 1.0, f"envelope depth must be in [0, 1], got {self.envelope_depth}")
        _check(self.attack_seconds > 0 and self.release_seconds > 0, "attack and release must be > 0 seconds")
        _check(1 <= self.batch_frames <= 64, f"batch frames must be in 1..64, got {self.batch_frames}")
        _check(self.text_guidance >= MIN_TEXT_GUIDANCE,
               f"text guidance must be at least {MIN_TEXT_GUIDANCE:g}, got {self.text_guidance:g}: 1 is the prompt "
               f"alone (no classifier-free guidance, what distilled models use), and below 1 the null prompt "
               f"replaces the prompt (0 would ignore it)")
        _check(self.frames in FRAME_PATHS, f"frames must be one of {FRAME_PATHS}, got {self.frames!r}")
        _check(self.windows in WINDOWS, f"windows must be one of {WINDOWS}, got {self.windows!r}")
        if self.condition_scale is not None:
            _check(0 < self.condition_scale <= 100, f"condition scale must be in (0, 100], got {self.condition_scale}")
        if self.strength is not None:
            _check(0 < self.strength <= 1, f"strength must be in (0, 1], got {self.strength}")
        _check(0 <= self.edit_scale <= 100, f"edit scale must be in 0..100, got {self.edit_scale}")
        _ = self.guidance  # GuidanceParams validates threshold, momentum and scales

    @property
    def guidance(self) -> GuidanceParams:
        return GuidanceParams(self.text_guidance, self.audio_guidance, self.threshold,
                              self.momentum_scale, self.momentum_beta)

    @classmethod
    def for_mode(cls, mode: str, **overrides: Any) -> RenderSettings:
        """The preset of ``mode`` with ``overrides`` (None values are ignored) applied on top."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        base = PAPER_PRESET if mode == "paper" else FAST_PRESET
        given = {k: v for k, v in overrides.items() if v is not None}
        if "delta_timestep" in given:
            given.setdefault("delta_step", None)
        elif "delta_step" in given:
            given.setdefault("delta_timestep", None)
        if "steps" in given and "delta_step" not in given and base.delta_step is not None:
            given["delta_step"] = given["steps"] - 1  # keep fast mode's "one guided step" for any step count
        if mode == "paper":
            given.setdefault("edit_scale", given.get("audio_guidance", base.audio_guidance))
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        return replace(base, mode=mode, **given)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


FAST_PRESET = RenderSettings()
PAPER_PRESET = RenderSettings(
    mode="paper", sampler="plms", steps=50, text_guidance=7.5, audio_guidance=7.0, threshold=0.8,
    momentum_scale=0.3, momentum_beta=0.6, delta_timestep=900, delta_step=None, envelope_depth=0.0,
    decoder="vae", windows="official",
)

# The official img2img script's settings (docs/design.md, "The official code"), applied over the mode's:
# DDIM, text guidance 1.5, s_e 10 (the official DDIM step halves it, so 5 here gives its edit), threshold
# 0.95, param_t 950, MAP input x20, strength 0.75. Its momentum is never carried from one step to the
# next: v starts at 0 in every step, so edit' = edit + sigma_m * 0, which is momentum scale 0. Departure: it
# samples the VAE posterior of the init image; we take its mode (deterministic frames).
IMG2IMG_PRESETS: dict[str, dict[str, Any]] = {
    "official": dict(sampler="ddim", steps=50, text_guidance=1.5, audio_guidance=10.0 / 2, threshold=0.95,
                     delta_timestep=950, condition_scale=20.0, momentum_scale=0.0, strength=0.75,
                     init_noise_one_step_early=True),
}
assert set(IMG2IMG_PRESETS) == set(names.IMG2IMG_PRESETS)  # the choices the command line offers


def layered(*layers: dict[str, Any]) -> dict[str, Any]:
    """Settings overrides, later layers winning; a layer that sets either delta replaces both of the
    earlier layers' deltas (a step index and a timestep cannot both hold)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        given = {k: v for k, v in layer.items() if v is not None}
        if any(name in given for name in DELTA_FIELDS):
            for name in DELTA_FIELDS:
                merged.pop(name, None)
        merged.update(given)
    return merged
