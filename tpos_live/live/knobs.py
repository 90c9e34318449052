"""THE knob table: every continuous scene setting a performer turns, defined once.

The control API (``LiveControl.set_guidance`` / ``set_fps``), OSC, MIDI, audio modulation, the app's
panels and presets all take a knob's name, setting, range, step and default from here. The ranges are
what a controller may sweep (narrower than what :class:`~tpos_live.config.RenderSettings` accepts, so a
fader's full travel is useful); the defaults are the fast mode's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tpos_live.config import FAST_PRESET, FPS_RANGE, MIN_TEXT_GUIDANCE


@dataclass(frozen=True)
class Knob:
    """One knob.

    Attributes:
        name: what OSC, MIDI, presets and ``set_guidance`` call it (``"audio"``).
        setting: the :class:`RenderSettings` field it sets (``"audio_guidance"``).
        label: what the app shows.
        low, high: the range a controller may set.
        step: one step of a spin box or an encoder.
        decimals: shown in the app.
    """

    name: str
    setting: str
    label: str
    low: float
    high: float
    step: float
    decimals: int = 2

    @property
    def default(self) -> float:
        return float(getattr(FAST_PRESET, self.setting))

    def checked(self, value: object) -> float:
        """``value`` as a float in range; ValueError saying what is wrong otherwise."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{self.name} must be a number, got {type(value).__name__}")
        value = float(value)
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise ValueError(f"{self.name} must be in {self.low:g}..{self.high:g}, got {value:g}")
        return value


GUIDANCE = (
    Knob("text", "text_guidance", "Text guidance", MIN_TEXT_GUIDANCE, 20.0, 0.5),
    Knob("audio", "audio_guidance", "Audio guidance", 0.0, 30.0, 0.5),
    Knob("threshold", "threshold", "Threshold", 0.0, 0.99, 0.05),
    Knob("momentum_scale", "momentum_scale", "Momentum", 0.0, 1.0, 0.05),
    Knob("momentum_beta", "momentum_beta", "Momentum beta", 0.0, 0.99, 0.05),
    Knob("envelope_depth", "envelope_depth", "Envelope depth", 0.0, 1.0, 0.05),
    Knob("attack_seconds", "attack_seconds", "Attack (s)", 0.001, 2.0, 0.005, 3),
    Knob("release_seconds", "release_seconds", "Release (s)", 0.001, 5.0, 0.05, 3),
)
"""The guidance knobs (``LiveControl.set_guidance`` keywords), in the app's order."""

FPS = Knob("fps", "fps", "FPS cap", *FPS_RANGE, 1.0, 1)  # the whole range RenderSettings accepts

KNOBS: dict[str, Knob] = {knob.name: knob for knob in (*GUIDANCE, FPS)}
GUIDANCE_KNOBS: dict[str, Knob] = {knob.name: knob for knob in GUIDANCE}


def knob(name: str) -> Knob:
    """The knob called ``name``; ValueError naming the knobs there are."""
    try:
        return KNOBS[name]
    except KeyError:
        raise ValueError(f"unknown knob {name!r}: use one of {sorted(KNOBS)}") from None


def check_guidance(values: dict[str, object]) -> dict[str, float]:
    """``{setting: value}`` for guidance knobs by name, each checked against its range (ValueError)."""
    unknown = set(values) - set(GUIDANCE_KNOBS)
    if unknown:
        raise ValueError(f"unknown guidance knobs {sorted(unknown)}: use {sorted(GUIDANCE_KNOBS)}")
    return {GUIDANCE_KNOBS[name].setting: GUIDANCE_KNOBS[name].checked(value) for name, value in values.items()}
