"""What every controller (OSC, MIDI, audio modulation) drives: the knobs of the one knob table
(:mod:`tpos_live.live.knobs`) and presets, recalled through a :class:`PresetBank` at once or on the
next beat or bar.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tpos_live.errors import UserError
from tpos_live.live.control import ControlState, LiveControl
from tpos_live.live.knobs import FPS, knob


def knob_value(state: ControlState, name: str) -> float:
    """The current value of knob ``name`` in a control snapshot."""
    return float(getattr(state.settings, knob(name).setting))


def set_knob(control: LiveControl, name: str, value: object) -> None:
    """Set one knob on ``control`` after checking its type and range (ValueError if bad)."""
    if name == FPS.name:
        control.set_fps(FPS.checked(value))
    else:
        control.set_guidance(**{name: knob(name).checked(value)})


class SceneLike(Protocol):
    """What a preset bank holds: a named thing that sets a scene (``tpos_live.live.presets.Preset``)."""

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
        self.presets, self.control = list(presets), control
        self.schedule = schedule or (lambda action: action())
        self.prefetch = prefetch
        self.current = -1  # none recalled yet
        self._lock = threading.Lock()
        self._prefetch_around(-1)

    def replace_presets(self, presets: list[SceneLike], current: str | None = None) -> None:
        """Hold ``presets`` from now on (a preset saved or deleted). The current one stays current by
        name, or the one called ``current`` becomes it (a preset just saved from the scene on screen)."""
        with self._lock:
            name = self.presets[self.current].name if 0 <= self.current < len(self.presets) else None
            name = current or name
            self.presets = list(presets)
            self.current = next((i for i, p in enumerate(self.presets) if p.name == name), -1)
        self._prefetch_around(self.current)

    def recall(self, index: int) -> None:
        """Switch to preset ``index`` (0-based); IndexError outside the bank."""
        if not 0 <= index < len(self.presets):
            raise IndexError(f"preset {index} does not exist: the bank has {len(self.presets)}"
                             + (" (0..)" if self.presets else ": save or add some first"))
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
        """The next preset (after the last: the first); IndexError for an empty bank."""
        self.recall(step_index(self.current, 1, max(len(self.presets), 1)))

    def previous(self) -> None:
        """The previous preset (before the first: the last); IndexError for an empty bank."""
        self.recall(step_index(self.current, -1, max(len(self.presets), 1)))


def load_preset_folder(folder: str | Path, may_be_empty: bool = False) -> list[SceneLike]:
    """The presets saved in ``folder`` (``*.toml``, by file name; see :mod:`tpos_live.live.presets`).
    Raises UserError for a folder with none (unless ``may_be_empty``), or a preset that cannot be read."""
    from tpos_live.live.presets import list_presets, load_preset

    paths = list_presets(Path(folder))
    if not paths and not may_be_empty:
        raise UserError(f"no presets (*.toml) in '{folder}': save some from the app, or give another folder")
    return [load_preset(path) for path in paths]
