"""The knobs and presets every controller (OSC, MIDI, audio modulation) drives, in one table.

A knob is a continuous setting of :class:`~tpos_live.live.control.LiveControl` with the range a
controller may sweep it over (narrower than what RenderSettings accepts, so a fader's full travel
is useful). A preset (``tpos_live.app.presets``) is recalled through a
:class:`PresetBank`: at once, or on the next beat or bar.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tpos_live.errors import UserError
from tpos_live.live.control import GUIDANCE_KNOBS, ControlState, LiveControl

# knob name -> (lowest, highest) a controller may set
KNOB_RANGES: dict[str, tuple[float, float]] = {
    "audio": (0.0, 30.0),
    "text": (0.0, 20.0),
    "threshold": (0.0, 0.99),
    "momentum_scale": (0.0, 1.0),
    "momentum_beta": (0.0, 0.99),
    "envelope_depth": (0.0, 1.0),
    "attack_seconds": (0.001, 2.0),
    "release_seconds": (0.001, 5.0),
    "fps": (1.0, 120.0),
}


def knob_value(state: ControlState, knob: str) -> float:
    """The current value of ``knob`` in a control snapshot."""
    if knob == "fps":
        return state.settings.fps
    return float(getattr(state.settings, GUIDANCE_KNOBS[knob]))


def checked_knob_value(knob: str, value: object) -> float:
    """``value`` as a float inside the knob's range; ValueError (saying what is wrong) otherwise."""
    if knob not in KNOB_RANGES:
        raise ValueError(f"unknown knob {knob!r}: use one of {sorted(KNOB_RANGES)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{knob} must be a number, got {type(value).__name__}")
    value = float(value)
    low, high = KNOB_RANGES[knob]
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{knob} must be in {low}..{high}, got {value}")
    return value


def set_knob(control: LiveControl, knob: str, value: object) -> None:
    """Set one knob on ``control`` after checking its type and range (ValueError if bad)."""
    value = checked_knob_value(knob, value)
    if knob == "fps":
        control.set_fps(value)
    else:
        control.set_guidance(**{knob: value})


class SceneLike(Protocol):
    """What a preset bank holds: a named thing that sets a scene (``tpos_live.app.presets.Preset``)."""

    name: str

    def apply(self, control: LiveControl) -> None: ...

    def state_after(self, state: ControlState) -> ControlState: ...


def step_index(index: int, step: int, count: int) -> int:
    """The preset ``step`` places from ``index`` in a list of ``count``, wrapping around; from none
    (``index`` < 0) the next is the first and the previous the last."""
    if index < 0:
        return 0 if step > 0 else count - 1
    return (index + step) % count


def neighbours(index: int, count: int) -> list[int]:
    """The next and previous presets of ``index`` (what a switch will likely want next), without it."""
    if count == 0:
        return []
    return [i for i in dict.fromkeys([step_index(index, 1, count), step_index(index, -1, count)]) if i != index]


class PresetBank:
    """An ordered list of presets with a current one; next/previous wrap around.

    ``schedule(action)`` decides when a recall happens: at once by default, or on the next beat or bar
    when a :class:`~tpos_live.control.tempo.BeatQuantiser` is plugged in. ``prefetch(states)`` (the
    engine's) gets the scenes of the next and previous presets after each recall, and of the first
    ones at the start, so that a switch to them starts at the next frame.
    """

    def __init__(self, presets: list[SceneLike], control: LiveControl,
                 schedule: Callable[[Callable[[], None]], None] | None = None,
                 prefetch: Callable[[list[ControlState]], None] | None = None) -> None:
        if not presets:
            raise ValueError("a preset bank needs at least one preset")
        self.presets, self.control = list(presets), control
        self.schedule = schedule or (lambda action: action())
        self.prefetch = prefetch
        self.current = -1  # none recalled yet
        self._lock = threading.Lock()
        self._prefetch_around(-1)

    def recall(self, index: int) -> None:
        """Switch to preset ``index`` (0-based); IndexError outside the bank."""
        if not 0 <= index < len(self.presets):
            raise IndexError(f"preset {index} does not exist: the bank has {len(self.presets)} (0..)")
        with self._lock:
            self.current = index

        def switch() -> None:
            self.presets[index].apply(self.control)
            self._prefetch_around(index)

        self.schedule(switch)

    def _prefetch_around(self, index: int) -> None:
        if self.prefetch is None:
            return
        state, wanted = self.control.state(), []
        for i in neighbours(index, len(self.presets)):
            with contextlib.suppress(ValueError):  # out of this engine's range: applying it will say so
                wanted.append(self.presets[i].state_after(state))
        self.prefetch(wanted)

    def recall_name(self, name: str) -> None:
        """Switch to the preset called ``name``; KeyError if none is."""
        for index, preset in enumerate(self.presets):
            if preset.name == name:
                return self.recall(index)
        raise KeyError(f"no preset called {name!r}")

    def next(self) -> None:
        """The next preset (after the last: the first)."""
        self.recall(step_index(self.current, 1, len(self.presets)))

    def previous(self) -> None:
        """The previous preset (before the first: the last)."""
        self.recall(step_index(self.current, -1, len(self.presets)))


def load_preset_folder(folder: str | Path) -> list[SceneLike]:
    """The presets saved in ``folder`` (``*.toml``, by file name; see :mod:`tpos_live.app.presets`).
    Raises UserError for a folder with none, or a preset that cannot be read."""
    from tpos_live.app.presets import list_presets, load_preset

    paths = list_presets(Path(folder))
    if not paths:
        raise UserError(f"no presets (*.toml) in '{folder}': save some from the app, or give another folder")
    return [load_preset(path) for path in paths]
