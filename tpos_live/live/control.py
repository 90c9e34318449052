"""The runtime control API of the live engine: what a performer changes while it runs.

Every setter is thread-safe and validated (ValueError with what is wrong), and takes effect at the
next frame: the render stage reads one immutable :class:`ControlState` snapshot per frame. A new
prompt, negative prompt, seed, text guidance, step count, delta step or init image makes a new
scene, prepared in the background and crossfaded in; the other knobs apply to the next frame directly.

    control.set_prompt("neon city at night")
    control.set_guidance(audio=9.0, threshold=0.9)
    control.set_scene("a forest", seed=7, guidance={"audio": 5.0})   # several changes, one switch
    control.set_steps(6, delta_step=4)
    control.set_fps(30)
    control.freeze(True)          # hold the current frame
    control.blackout(True)        # output black
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path

from tpos_live.config import RenderSettings
from tpos_live.limits import MAX_CROSSFADE_SECONDS
from tpos_live.live.knobs import FPS, check_guidance
from tpos_live.live.settings import LiveSettings

MAX_PROMPT_CHARS = 2000
SCENE_SETTINGS = ("seed", "text_guidance", "steps", "delta_step", "delta_timestep")
"""The RenderSettings fields a prepared scene depends on (with the prompts and the init image)."""


@dataclass(frozen=True)
class ControlState:
    """One consistent snapshot of every runtime setting; ``version`` grows with each change."""

    prompt: str
    negative_prompt: str
    settings: RenderSettings  # seed, fps, steps and the guidance knobs live here
    init_image: str | None = None
    crossfade_seconds: float = LiveSettings.crossfade_seconds
    frozen: bool = False
    blackout: bool = False
    version: int = 0

    @property
    def scene_key(self) -> tuple:
        """What a scene depends on: a change here means preparing a new one."""
        return (self.prompt, self.negative_prompt, self.init_image,
                *(getattr(self.settings, name) for name in SCENE_SETTINGS))

    def with_scene(self, prompt: str | None = None, negative_prompt: str | None = None, seed: int | None = None,
                   guidance: dict[str, float] | None = None) -> ControlState:
        """This state with another scene (what is None stays); ValueError for a bad value, naming it."""
        changes = check_guidance(guidance or {})
        if seed is not None:
            changes["seed"] = int(seed)
        scene = {"settings": replace(self.settings, **changes)}  # RenderSettings validates: ValueError
        if prompt is not None:
            scene["prompt"] = _checked_prompt(prompt)
        if negative_prompt is not None:
            scene["negative_prompt"] = _checked_prompt(negative_prompt)
        return replace(self, **scene)


class LiveControl:
    """Thread-safe setters over a :class:`ControlState`; :meth:`state` returns the current snapshot.

    Args:
        settings: the starting render settings (sampler and size stay fixed while running).
        prompt, negative_prompt: the starting scene.
        init_image: start every scene from this image (None: from noise alone).
        crossfade_seconds: how long a scene switch takes.
    """

    def __init__(self, settings: RenderSettings, prompt: str, negative_prompt: str = "",
                 init_image: str | Path | None = None,
                 crossfade_seconds: float = LiveSettings.crossfade_seconds) -> None:
        self._lock = threading.Lock()
        self._state = ControlState(_checked_prompt(prompt), _checked_prompt(negative_prompt), settings,
                                   _checked_image(init_image), _checked_crossfade(crossfade_seconds))

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

    def set_scene(self, prompt: str | None = None, negative_prompt: str | None = None, seed: int | None = None,
                  guidance: dict[str, float] | None = None) -> None:
        """Several scene changes at once (a preset): one new scene, never one with half the changes."""
        with self._lock:
            state = self._state.with_scene(prompt, negative_prompt, seed, guidance)
            self._state = replace(state, version=self._state.version + 1)

    def set_steps(self, steps: int, delta_step: int | None = None) -> None:
        """Denoising steps, and the first guided step (None: kept, moved below ``steps`` if needed;
        a timestep delta stays as it is). Makes a new scene."""
        with self._lock:
            settings = self._state.settings
            if delta_step is None and settings.delta_step is not None:
                delta_step = min(settings.delta_step, int(steps) - 1)
            changes = {"steps": int(steps)} | ({} if delta_step is None else {"delta_step": int(delta_step)})
            settings = replace(settings, **changes)  # RenderSettings validates: ValueError
            self._state = replace(self._state, settings=settings, version=self._state.version + 1)

    def set_init_image(self, path: str | Path | None) -> None:
        """Start every scene from this image (None: from noise alone). Makes a new scene; an image
        that cannot be read is reported by the engine and the current scene stays."""
        self._update(init_image=_checked_image(path))

    def set_crossfade(self, seconds: float) -> None:
        """How long the next scene switches take (0: cut)."""
        self._update(crossfade_seconds=_checked_crossfade(seconds))

    def set_seed(self, seed: int) -> None:
        """A new initial noise (a new scene, same prompt)."""
        self._update_settings(seed=int(seed))

    def set_guidance(self, **knobs: float) -> None:
        """Change guidance knobs by keyword: ``audio`` (g_s), ``text`` (g, makes a new scene),
        ``threshold``, ``momentum_scale``, ``momentum_beta``, ``envelope_depth``, ``attack_seconds``,
        ``release_seconds`` (ranges: ``tpos_live.live.knobs``). Unknown names and out-of-range values raise
        ValueError."""
        self._update_settings(**check_guidance(knobs))

    def set_fps(self, fps: float) -> None:
        """The frame-rate cap (range: ``tpos_live.live.knobs.FPS``)."""
        self._update_settings(fps=FPS.checked(fps))

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


def _checked_image(path: str | Path | None) -> str | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise ValueError(f"the init image {path} is not a file: pick an existing image")
    return str(path)


def _checked_crossfade(seconds: float) -> float:
    if not 0.0 <= float(seconds) <= MAX_CROSSFADE_SECONDS:
        raise ValueError(f"crossfade must be in 0..{MAX_CROSSFADE_SECONDS:g} seconds, got {seconds}")
    return float(seconds)


def _checked_prompt(text: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"a prompt must be text, got {type(text).__name__}")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(f"a prompt must be at most {MAX_PROMPT_CHARS} characters, got {len(text)}")
    return text
