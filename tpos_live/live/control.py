"""The runtime control API of the live engine: what a performer changes while it runs.

Every setter is thread-safe and validated (ValueError with what is wrong), and takes effect at the
next frame: the render stage reads one immutable :class:`ControlState` snapshot per frame. A new
prompt, negative prompt, seed or text guidance makes a new scene, prepared in the background and
crossfaded in; the other knobs apply to the next frame directly.

    control.set_prompt("neon city at night")
    control.set_guidance(audio=9.0, threshold=0.9)
    control.set_fps(30)
    control.freeze(True)          # hold the current frame
    control.blackout(True)        # output black
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from tpos_live.config import RenderSettings

GUIDANCE_KNOBS = {  # set_guidance keyword -> RenderSettings field
    "audio": "audio_guidance",
    "text": "text_guidance",
    "threshold": "threshold",
    "momentum_scale": "momentum_scale",
    "momentum_beta": "momentum_beta",
    "envelope_depth": "envelope_depth",
    "attack_seconds": "attack_seconds",
    "release_seconds": "release_seconds",
}
MAX_PROMPT_CHARS = 2000


@dataclass(frozen=True)
class ControlState:
    """One consistent snapshot of every runtime setting; ``version`` grows with each change."""

    prompt: str
    negative_prompt: str
    settings: RenderSettings  # seed, fps and the guidance knobs live here
    frozen: bool = False
    blackout: bool = False
    version: int = 0

    @property
    def scene_key(self) -> tuple[str, str, int, float]:
        """What a scene depends on: a change here means preparing a new one."""
        return self.prompt, self.negative_prompt, self.settings.seed, self.settings.text_guidance


class LiveControl:
    """Thread-safe setters over a :class:`ControlState`; :meth:`state` returns the current snapshot.

    Args:
        settings: the starting render settings (sampler, steps and size stay fixed while running).
        prompt, negative_prompt: the starting scene.
    """

    def __init__(self, settings: RenderSettings, prompt: str, negative_prompt: str = "") -> None:
        self._lock = threading.Lock()
        self._state = ControlState(_checked_prompt(prompt), _checked_prompt(negative_prompt), settings)

    def state(self) -> ControlState:
        """The current snapshot (immutable: hold on to it for a whole frame)."""
        return self._state

    def set_prompt(self, prompt: str, negative_prompt: str | None = None) -> None:
        """A new scene from ``prompt`` (and ``negative_prompt`` if given), crossfaded in when ready."""
        prompt = _checked_prompt(prompt)
        negative = None if negative_prompt is None else _checked_prompt(negative_prompt)
        self._update(prompt=prompt, **({} if negative is None else {"negative_prompt": negative}))

    def set_negative_prompt(self, negative_prompt: str) -> None:
        """What the picture should not show; makes a new scene."""
        self._update(negative_prompt=_checked_prompt(negative_prompt))

    def set_seed(self, seed: int) -> None:
        """A new initial noise (a new scene, same prompt)."""
        self._update_settings(seed=int(seed))

    def set_guidance(self, **knobs: float) -> None:
        """Change guidance knobs by keyword: ``audio`` (g_s), ``text`` (g, makes a new scene),
        ``threshold``, ``momentum_scale``, ``momentum_beta``, ``envelope_depth``, ``attack_seconds``,
        ``release_seconds``. Unknown names and out-of-range values raise ValueError."""
        unknown = set(knobs) - set(GUIDANCE_KNOBS)
        if unknown:
            raise ValueError(f"unknown guidance knobs {sorted(unknown)}: use {sorted(GUIDANCE_KNOBS)}")
        self._update_settings(**{GUIDANCE_KNOBS[name]: float(value) for name, value in knobs.items()})

    def set_fps(self, fps: float) -> None:
        """The frame-rate cap."""
        self._update_settings(fps=float(fps))

    def freeze(self, on: bool = True) -> None:
        """Hold the current frame (rendering pauses) or resume."""
        self._update(frozen=bool(on))

    def blackout(self, on: bool = True) -> None:
        """Output black frames, or resume the picture."""
        self._update(blackout=bool(on))

    def _update_settings(self, **changes) -> None:
        with self._lock:
            settings = replace(self._state.settings, **changes)  # RenderSettings validates: ValueError
            self._state = replace(self._state, settings=settings, version=self._state.version + 1)

    def _update(self, **changes) -> None:
        with self._lock:
            self._state = replace(self._state, **changes, version=self._state.version + 1)


def _checked_prompt(text: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"a prompt must be text, got {type(text).__name__}")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"a prompt must be at most {MAX_PROMPT_CHARS} characters, got {len(text)}")
    return text
