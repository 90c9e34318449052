"""What a live session is played with (OSC, MIDI, presets, tempo, modulation) and where its frames go
besides the screen (NDI), as plain specs: the command line fills them, ``attach_controls`` starts them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

QUANTISE_CHOICES = ("off", "beat", "bar")
TEMPO_CHOICES = ("audio", "tap")


@dataclass(frozen=True)
class ControlSpec:
    """The live controls to start (all off by default; docs/control.md).

    Attributes:
        osc_port, osc_host: listen for OSC on this UDP port and address (127.0.0.1: this machine only).
        midi_port: MIDI input by index or (part of) its name.
        midi_map: the MIDI mappings file (None: midi.json in the settings folder).
        midi_learn: knobs or triggers to learn in turn from the next controls moved.
        presets: a folder of preset files (*.toml) to recall by OSC or MIDI.
        presets_may_be_empty: a presets folder without presets is an empty bank (the app's: presets
            saved later join it), not an error.
        quantise: preset changes land on the next "beat" or "bar" ("off": at once).
        tempo: the beat clock follows the sound ("audio") or only taps ("tap").
        bpm_range: the tempi the audio tempo may take.
        beats_per_bar: for quantising to bars.
        modulate: routes ``FEATURE:KNOB:LOW:HIGH[:GAIN[:SMOOTH]]`` from audio features to knobs.
    """

    osc_port: int | None = None
    osc_host: str = "127.0.0.1"
    midi_port: str | None = None
    midi_map: Path | None = None
    midi_learn: tuple[str, ...] = ()
    presets: Path | None = None
    presets_may_be_empty: bool = False
    quantise: str = "off"
    tempo: str = "audio"
    bpm_range: tuple[float, float] = (60.0, 200.0)
    beats_per_bar: int = 4
    modulate: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.quantise not in QUANTISE_CHOICES:
            raise ValueError(f"quantise must be one of {QUANTISE_CHOICES}, got {self.quantise!r}")
        if self.tempo not in TEMPO_CHOICES:
            raise ValueError(f"tempo must be one of {TEMPO_CHOICES}, got {self.tempo!r}")
        if self.midi_learn and self.midi_port is None:
            raise ValueError("--midi-learn learns from a MIDI input: give it with --midi-port")


@dataclass(frozen=True)
class OutputSpec:
    """Where the frames go besides the screen.

    Attributes:
        record: record the frames and the sound to this MP4.
        ndi: send the frames as an NDI source of this name.
    """

    record: Path | None = None
    ndi: str | None = None
