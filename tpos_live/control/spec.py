"""What a live session is played with (OSC, MIDI, presets, tempo, Ableton Link, modulation) and where its
frames go besides the screen (NDI, Spout, Syphon), as plain specs: the command line fills them,
``attach_controls`` starts them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

QUANTISE_CHOICES = ("off", "beat", "bar")
TEMPO_CHOICES = ("audio", "tap", "midi-clock")
OSC_HOST = "127.0.0.1"  # this machine only: a performer opens OSC to the network by choice
BPM_RANGE = (60.0, 200.0)  # the tempi the audio tempo follower searches unless told otherwise


@dataclass(frozen=True)
class ControlSpec:
    """The live controls to start (all off by default; docs/control.md).

    Attributes:
        osc_port, osc_host: listen for OSC on this UDP port and address (``OSC_HOST``: this machine only).
        midi_port: MIDI input by index or (part of) its name.
        midi_map: the MIDI mappings file (None: midi.json in the settings folder).
        midi_learn: knobs or triggers to learn in turn from the next controls moved.
        presets: a folder of preset files (*.toml) to recall by OSC or MIDI.
        presets_may_be_empty: a presets folder without presets is an empty bank (the app's: presets
            saved later join it), not an error.
        quantise: preset changes land on the next "beat" or "bar" ("off": at once).
        tempo: the beat clock follows the sound ("audio"), only taps ("tap"), or the MIDI clock (24 ppqn,
            start/stop) arriving on ``midi_port`` ("midi-clock").
        link: join an Ableton Link session: its tempo and beat phase drive the beat clock.
        link_lead: with ``link``, push this session's tempo (``tempo``: audio or taps) to the Link
            session instead of following it.
        bpm_range: the tempi the audio tempo may take.
        beats_per_bar: for quantising to bars.
        modulate: routes ``FEATURE:KNOB:LOW:HIGH[:GAIN[:SMOOTH]]`` from audio features to knobs.
    """

    osc_port: int | None = None
    osc_host: str = OSC_HOST
    midi_port: str | None = None
    midi_map: Path | None = None
    midi_learn: tuple[str, ...] = ()
    presets: Path | None = None
    presets_may_be_empty: bool = False
    quantise: str = "off"
    tempo: str = "audio"
    bpm_range: tuple[float, float] = BPM_RANGE
    beats_per_bar: int = 4
    modulate: tuple[str, ...] = ()
    link: bool = False
    link_lead: bool = False

    def __post_init__(self) -> None:
        if self.quantise not in QUANTISE_CHOICES:
            raise ValueError(f"quantise must be one of {QUANTISE_CHOICES}, got {self.quantise!r}")
        if self.tempo not in TEMPO_CHOICES:
            raise ValueError(f"tempo must be one of {TEMPO_CHOICES}, got {self.tempo!r}")
        if self.tempo == "midi-clock" and self.midi_port is None:
            raise ValueError("--tempo midi-clock follows the clock of a MIDI input: give it with --midi-port")
        if self.link_lead and not self.link:
            raise ValueError("--link-lead leads a Link session: add --link")
        if self.link and self.tempo == "midi-clock":
            raise ValueError("--link and --tempo midi-clock are two beat clocks: pick one")
        if self.midi_learn and self.midi_port is None:
            raise ValueError("--midi-learn learns from a MIDI input: give it with --midi-port")
        if self.midi_map is not None and self.midi_port is None:
            raise ValueError("--midi-map maps the controls of a MIDI input: give it with --midi-port")


@dataclass(frozen=True)
class OutputSpec:
    """Where the frames go besides the screen.

    Attributes:
        record: record the frames and the sound to this MP4.
        ndi: send the frames as an NDI source of this name.
        spout: send them as a Spout sender of this name (Windows).
        syphon: send them as a Syphon server of this name (macOS).
    """

    record: Path | None = None
    ndi: str | None = None
    spout: str | None = None
    syphon: str | None = None

    def __post_init__(self) -> None:
        for output, name in self.video_outputs().items():
            if not name.strip():
                raise ValueError(f"--{output} needs a name for the frames' source, got {name!r}")

    def video_outputs(self) -> dict[str, str]:
        """``{"ndi"|"spout"|"syphon": name}`` of the video outputs asked for."""
        return {output: name for output, name in (("ndi", self.ndi), ("spout", self.spout),
                                                  ("syphon", self.syphon)) if name is not None}
