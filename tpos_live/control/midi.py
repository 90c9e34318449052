"""MIDI control (mido with the rtmidi backend): knobs and triggers mapped from CCs and notes, with
ranges, curves, soft takeover and MIDI learn; mappings saved as JSON or TOML.

    controller = MidiController(engine.control, load_mappings(path), presets=bank, tap=tap.tap)
    controller.learn("audio")          # the next CC moved is bound to audio guidance
    port = open_input("nanoKONTROL", controller)   # its callback is controller.handle

Every message goes through :meth:`MidiController.handle`, from a port's callback or a test alike.

Knobs (CC, 0..127 over the mapping's range through its curve): the names of
:data:`~tpos_live.live.knobs.KNOBS`. With soft takeover a knob whose position does not match
the current value (changed by a preset, OSC or another knob) is ignored until it crosses that value,
so the picture does not jump. Triggers (a note-on, or a CC rising past 63): ``freeze`` and
``blackout`` (toggle), ``reroll_seed``, ``tap_tempo``, ``preset_next``, ``preset_previous``,
``preset_recall`` (with the preset index as ``argument``).
"""

from __future__ import annotations

import json
import math
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from tpos_live.control.preset_bank import PresetBank, knob_value, set_knob
from tpos_live.errors import UserError
from tpos_live.fileio import write_text_atomically
from tpos_live.live.control import LiveControl
from tpos_live.live.knobs import KNOBS

CLOCK_MESSAGES = ("clock", "start", "continue", "stop", "songpos")  # MIDI clock, for --tempo midi-clock
TRIGGERS = ("freeze", "blackout", "reroll_seed", "tap_tempo", "preset_next", "preset_previous", "preset_recall")
CURVES = ("linear", "exp", "log")
KINDS = ("cc", "note")
CURVE_BEND = 4.0  # how strongly exp/log curve: exp(4) ~ 55x between the ends of the travel
MAPPINGS_FILE = "midi.json"


@dataclass(frozen=True)
class MidiMapping:
    """One control on a MIDI device bound to a knob or a trigger.

    Attributes:
        target: a knob name (``audio``, ``threshold``, ``fps``, ...) or a trigger (see the module doc).
        kind: ``"cc"`` (control change) or ``"note"``.
        channel: MIDI channel 0..15; number: controller or note number 0..127.
        low, high: the knob value at CC 0 and at CC 127 (default: the knob's whole range; high < low
            turns the knob round).
        curve: ``linear``, ``exp`` (fine control at the low end) or ``log`` (at the high end).
        soft_takeover: wait until the knob crosses the current value before moving it.
        argument: the preset index of ``preset_recall``.
    """

    target: str
    kind: str
    channel: int
    number: int
    low: float | None = None
    high: float | None = None
    curve: str = "linear"
    soft_takeover: bool = True
    argument: int | None = None

    def __post_init__(self) -> None:
        if self.target not in KNOBS and self.target not in TRIGGERS:
            raise ValueError(f"unknown MIDI target {self.target!r}: use a knob {sorted(KNOBS)} or a "
                             f"trigger {list(TRIGGERS)}")
        if self.kind not in KINDS:
            raise ValueError(f"MIDI kind must be one of {KINDS}, got {self.kind!r}")
        if not (_is_int(self.channel) and 0 <= self.channel <= 15 and _is_int(self.number)
                and 0 <= self.number <= 127):
            raise ValueError(f"MIDI channel must be 0..15 and number 0..127, got {self.channel}, {self.number}")
        if self.curve not in CURVES:
            raise ValueError(f"curve must be one of {CURVES}, got {self.curve!r}")
        if self.is_knob:
            if self.kind != "cc":
                raise ValueError(f"knob '{self.target}' needs a CC (a fader or knob), not a note")
            low, high = KNOBS[self.target].low, KNOBS[self.target].high
            for end in (self.low, self.high):
                if end is not None and not (isinstance(end, (int, float)) and low <= end <= high):
                    raise ValueError(f"the range of '{self.target}' must lie in {low}..{high}, got {end!r}")
        if (self.target == "preset_recall") != (self.argument is not None):
            raise ValueError("preset_recall needs the preset index as argument (and only it takes one)")
        if self.argument is not None and not (_is_int(self.argument) and self.argument >= 0):
            raise ValueError(f"the preset index must be >= 0, got {self.argument!r}")

    @property
    def is_knob(self) -> bool:
        return self.target in KNOBS

    @property
    def source(self) -> tuple[str, int, int]:
        return self.kind, self.channel, self.number

    @property
    def span(self) -> tuple[float, float]:
        """The knob values at CC 0 and at CC 127."""
        low, high = KNOBS[self.target].low, KNOBS[self.target].high
        return (low if self.low is None else float(self.low)), (high if self.high is None else float(self.high))

    def value(self, raw: int) -> float:
        """The knob value for CC value ``raw`` (0..127)."""
        x = min(max(raw, 0), 127) / 127.0
        if self.curve == "exp":
            x = math.expm1(CURVE_BEND * x) / math.expm1(CURVE_BEND)
        elif self.curve == "log":
            x = math.log1p(math.expm1(CURVE_BEND) * x) / CURVE_BEND
        start, end = self.span
        return start + (end - start) * x


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class _Learning:
    target: str
    argument: int | None
    options: dict
    skip: tuple[str, int, int] | None = None  # a source that must not be taken (learning in turn)


class MidiController:
    """Applies MIDI messages to a :class:`LiveControl` through its mappings; see the module docstring.

    Args:
        control: the engine's control.
        mappings: the bindings (a later one for the same source replaces an earlier one).
        presets: what the preset triggers switch (None: those triggers are ignored with a report).
        tap: called by ``tap_tempo`` (a :class:`~tpos_live.control.tempo.TapTempo`'s ``tap``).
        report: ``report(level, message)``.
        takeover_tolerance: how close (a fraction of the range) a knob must come to count as crossing.
        clock: receives the MIDI clock messages (a :class:`~tpos_live.control.tempo.MidiClockTempo`'s
            ``handle``); None: they are ignored.
    """

    def __init__(self, control: LiveControl, mappings: Sequence[MidiMapping] = (),
                 presets: PresetBank | None = None, tap: Callable[[], object] | None = None,
                 report: Callable[[str, str], None] | None = None, takeover_tolerance: float = 0.02,
                 clock: Callable[[object], object] | None = None) -> None:
        self.control, self.presets, self.tap, self.clock = control, presets, tap, clock
        self.report = report or (lambda level, message: None)
        self.takeover_tolerance = takeover_tolerance
        self._mappings: dict[tuple[str, int, int], MidiMapping] = {}
        self._lock = threading.RLock()
        self._learning: _Learning | None = None
        self._queue: list[str] = []  # targets still to learn after this one
        self._cc_high: dict[tuple[int, int], bool] = {}  # trigger CCs: is the control up (>= 64)?
        self._last_position: dict[tuple[str, int, int], float] = {}  # a knob's last value, sent or not
        self._engaged: dict[tuple[str, int, int], float] = {}  # picked-up knobs -> the value they set
        self.ignored = 0  # messages that matched nothing
        for mapping in mappings:
            self.add(mapping)

    @property
    def mappings(self) -> list[MidiMapping]:
        with self._lock:
            return list(self._mappings.values())

    @property
    def learning(self) -> str | None:
        """The target waiting for a control to be moved (None when not learning)."""
        learning = self._learning
        return None if learning is None else learning.target

    def add(self, mapping: MidiMapping) -> None:
        """Bind ``mapping``; it replaces any mapping of the same source, and of the same target."""
        with self._lock:
            for source, old in list(self._mappings.items()):
                if (old.target, old.argument) == (mapping.target, mapping.argument) or source == mapping.source:
                    del self._mappings[source]
                    self._engaged.pop(source, None)
            self._mappings[mapping.source] = mapping

    def learn(self, target: str, argument: int | None = None, **options) -> None:
        """Bind ``target`` to the next control moved (a CC for a knob; a note or CC for a trigger).
        ``options`` are :class:`MidiMapping` fields (``low``, ``high``, ``curve``, ``soft_takeover``)."""
        MidiMapping(target, "cc", 0, 0, argument=argument, **options)  # validate now, not at the move
        with self._lock:
            self._learning = _Learning(target, argument, options)

    def learn_in_turn(self, targets: Sequence[str]) -> None:
        """Learn each of ``targets`` in turn: every control moved binds the next one."""
        for target in targets:
            MidiMapping(target, "cc", 0, 0, argument=0 if target == "preset_recall" else None)
        with self._lock:
            self._queue = list(targets)
            self._learn_next()

    def _learn_next(self, skip: tuple[str, int, int] | None = None) -> None:
        if self._queue:
            target = self._queue.pop(0)
            argument = 0 if target == "preset_recall" else None
            self._learning = _Learning(target, argument, {}, skip)
            self.report("info", f"MIDI learn: move the control for '{target}'")

    def handle(self, message) -> str:
        """Apply one mido message; returns what it did: ``"learned"``, ``"set"``, ``"waiting"`` (soft
        takeover), ``"triggered"``, ``"clock"`` (passed to the clock) or ``"ignored"``. Never raises for
        a message."""
        if getattr(message, "type", None) in CLOCK_MESSAGES:
            if self.clock is None:
                return self._ignore()
            self.clock(message)  # 24 a beat: kept out of the mappings' lock
            return "clock"
        with self._lock:
            event = _event(message)
            if event is None:
                return self._ignore()
            source, value, pressed = event
            if self._learning is not None:
                learned = self._learn_from(source)
                if learned:
                    return "learned"
            mapping = self._mappings.get(source)
            if mapping is None:
                return self._ignore()
            if mapping.is_knob:
                return self._move_knob(mapping, value)
            if source[0] == "cc":
                was_high = self._cc_high.get(source[1:], False)
                self._cc_high[source[1:]] = pressed
                pressed = pressed and not was_high
            if not pressed:
                return "ignored"
            try:
                return self._trigger(mapping)
            except ValueError as error:  # e.g. a preset whose knobs the engine refuses
                self.report("warning", f"MIDI {mapping.target}: {error}")
                return "ignored"

    def _ignore(self) -> str:
        self.ignored += 1
        return "ignored"

    def _learn_from(self, source: tuple[str, int, int]) -> bool:
        learning = self._learning
        if source[0] != "cc" and learning.target in KNOBS:
            return False  # a knob needs a fader: keep waiting
        if source == learning.skip:
            return False  # the fader just learned, still moving: not the next target's control
        self.add(MidiMapping(learning.target, *source, argument=learning.argument, **learning.options))
        self._learning = None
        self.report("info", f"MIDI learn: {source[0]} {source[2]} on channel {source[1] + 1} -> {learning.target}")
        self._learn_next(skip=source)
        return True

    def _move_knob(self, mapping: MidiMapping, raw: int) -> str:
        source, wanted = mapping.source, mapping.value(raw)
        current = knob_value(self.control.state(), mapping.target)
        previous = self._last_position.get(source)
        self._last_position[source] = wanted
        if mapping.soft_takeover and not self._picked_up(mapping, wanted, previous, current):
            return "waiting"
        try:
            set_knob(self.control, mapping.target, wanted)
        except ValueError as error:  # e.g. a range the engine's own checks narrow further
            self.report("warning", f"MIDI {mapping.target}: {error}")
            return "ignored"
        self._engaged[source] = knob_value(self.control.state(), mapping.target)
        return "set"

    def _picked_up(self, mapping: MidiMapping, wanted: float, previous: float | None, current: float) -> bool:
        """Soft takeover: is this knob in control of the value (again)?"""
        source = mapping.source
        if source in self._engaged and self._engaged[source] == current:
            return True  # nothing else moved the value since this knob set it
        self._engaged.pop(source, None)
        start, end = mapping.span
        target = min(max(current, min(start, end)), max(start, end))  # a value out of reach: its nearest end
        if abs(wanted - target) <= self.takeover_tolerance * abs(end - start):
            return True
        return previous is not None and (previous - target) * (wanted - target) <= 0  # crossed it

    def _trigger(self, mapping: MidiMapping) -> str:
        state, target = self.control.state(), mapping.target
        if target == "freeze":
            self.control.freeze(not state.frozen)
        elif target == "blackout":
            self.control.blackout(not state.blackout)
        elif target == "reroll_seed":
            self.control.set_seed(random.randrange(2**31))
        elif target == "tap_tempo":
            if self.tap is None:
                return self._unavailable("tap tempo is off")
            self.tap()
        elif self.presets is None:
            return self._unavailable("no presets loaded (start with --presets FOLDER)")
        elif target == "preset_next":
            self.presets.next()
        elif target == "preset_previous":
            self.presets.previous()
        else:
            try:
                self.presets.recall(mapping.argument)
            except IndexError as error:
                return self._unavailable(str(error))
        return "triggered"

    def _unavailable(self, why: str) -> str:
        self.report("warning", f"MIDI trigger ignored: {why}")
        return self._ignore()


def _event(message) -> tuple[tuple[str, int, int], int, bool] | None:
    """``(source, value, pressed)`` of a CC or note message; None for every other message."""
    kind = getattr(message, "type", None)
    if kind == "control_change":
        return ("cc", message.channel, message.control), message.value, message.value >= 64
    if kind in ("note_on", "note_off"):
        pressed = kind == "note_on" and message.velocity > 0
        return ("note", message.channel, message.note), message.velocity, pressed
    return None


# ---- saving and loading -----------------------------------------------------------------------------

def default_mappings_path() -> Path:
    """Where mappings are kept with the other settings: ``<settings folder>/midi.json``."""
    from tpos_live.paths import settings_folder

    return settings_folder() / MAPPINGS_FILE


def save_mappings(mappings: Sequence[MidiMapping], path: str | Path) -> Path:
    """Write ``mappings`` to ``path``: TOML for ``.toml`` (``[[mapping]]`` tables), else JSON."""
    path = Path(path)
    rows = [{k: v for k, v in asdict(m).items() if v is not None} for m in mappings]
    if path.suffix == ".toml":
        text = "".join("[[mapping]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in row.items()) + "\n"
                       for row in rows)
    else:
        text = json.dumps({"mappings": rows}, indent=2) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, text)
    except OSError as error:
        raise UserError(f"cannot write MIDI mappings to '{path}' ({error.strerror}): pick a writable place") from None
    return path


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    return repr(value)


def load_mappings(path: str | Path) -> list[MidiMapping]:
    """Mappings saved by :func:`save_mappings` (JSON, or TOML for ``.toml``); UserError if unusable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            rows = tomllib.loads(text).get("mapping", [])
        else:
            rows = json.loads(text).get("mappings", [])
        known = {f.name for f in fields(MidiMapping)}
        return [MidiMapping(**{k: v for k, v in row.items() if k in known}) for row in rows]
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as error:
        raise UserError(f"cannot use the MIDI mappings in '{path}' ({error}): fix or delete the file") from None


# ---- ports ----------------------------------------------------------------------------------------

def input_ports() -> list[str]:
    """The MIDI input ports the system has; UserError when MIDI itself is unavailable."""
    import mido

    try:
        return list(mido.get_input_names())
    except (OSError, ImportError) as error:  # rtmidi's errors are OSErrors (e.g. no ALSA sequencer)
        raise UserError(f"MIDI is not available here ({str(error).strip()}): on Linux load the ALSA "
                        f"sequencer (modprobe snd-seq) or start JACK") from None


def find_port(spec: str | int, names: Sequence[str]) -> str:
    """The port named by ``spec``: an index into ``names``, an exact name or a unique substring."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        index = int(spec)
        if 0 <= index < len(names):
            return names[index]
        raise UserError(f"there is no MIDI input {index}: the inputs are {list(names) or 'none'}")
    if spec in names:
        return spec
    matches = [name for name in names if spec.lower() in name.lower()]
    if len(matches) == 1:
        return matches[0]
    which = "several MIDI inputs match" if matches else "no MIDI input matches"
    raise UserError(f"{which} '{spec}': the inputs are {list(names) or 'none'}")


def open_input(spec: str | int, controller: MidiController):
    """Open a MIDI input (see :func:`find_port`) whose messages go to ``controller.handle`` on
    rtmidi's thread. Close it with ``port.close()``."""
    import mido

    name = find_port(spec, input_ports())
    try:
        return mido.open_input(name, callback=controller.handle)
    except (OSError, ImportError) as error:
        raise UserError(f"cannot open the MIDI input '{name}' ({str(error).strip()}): is another program "
                        f"holding it?") from None

