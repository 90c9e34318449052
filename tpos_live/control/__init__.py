"""Playing the engine live: OSC, MIDI, tempo, audio modulation and NDI out (docs/control.md).

The ``live`` command wires them in with two calls::

    add_control_arguments(parser)                      # --osc-port, --midi-port, --presets, ...
    with attach_controls(engine, args, report):        # after engine.start()
        ...                                            # run; everything stops on leaving

Each part also works alone: :class:`~tpos_live.control.osc.OscControl`,
:class:`~tpos_live.control.midi.MidiController`, :class:`~tpos_live.control.tempo.OnsetTempo`,
:class:`~tpos_live.control.modulation.Modulator`, :class:`~tpos_live.control.ndi.NdiOutput`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from tpos_live.errors import UserError

Report = Callable[[str, str], None]


def add_control_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the live-control options (all off by default) to the ``live`` command's parser."""
    group = parser.add_argument_group("live control (docs/control.md)")
    group.add_argument("--osc-port", type=int, metavar="PORT", help="listen for OSC on this UDP port")
    group.add_argument("--osc-host", default="127.0.0.1", help="OSC address to listen on (127.0.0.1: this "
                                                               "machine only; 0.0.0.0: the network)")
    group.add_argument("--midi-port", metavar="NAME", help="MIDI input: index or (part of) its name")
    group.add_argument("--midi-map", type=Path, metavar="FILE", help="MIDI mappings (.json or .toml; default: "
                                                                     "midi.json in the settings folder)")
    group.add_argument("--midi-learn", metavar="TARGET,...", help="learn these knobs/triggers in turn from the "
                                                                  "next controls moved; saved to --midi-map")
    group.add_argument("--presets", type=Path, metavar="FOLDER", help="preset files (*.toml) to recall by "
                                                                      "OSC/MIDI")
    group.add_argument("--quantise", choices=("off", "beat", "bar"), default="off",
                       help="preset changes land on the next beat or bar (off)")
    group.add_argument("--tempo", choices=("audio", "tap"), default="audio",
                       help="the beat clock follows the sound (default) or only taps")
    group.add_argument("--bpm-range", default="60:200", metavar="LOW:HIGH",
                       help="tempi the audio tempo may take (60:200); narrow it if it reads double or half")
    group.add_argument("--beats-per-bar", type=int, default=4, help="for --quantise bar (4)")
    group.add_argument("--modulate", action="append", default=[], metavar="FEATURE:KNOB:LOW:HIGH[:GAIN[:SMOOTH]]",
                       help="drive a knob from low/mid/high/onset/loudness (repeatable)")
    group.add_argument("--ndi", metavar="NAME", help="send the frames as an NDI source with this name")


class Controls:
    """Everything :func:`attach_controls` started; :meth:`close` (or leaving ``with``) stops it all."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.osc = self.midi = self.tempo = self.tap = self.clock = self.quantiser = None
        self.presets = self.modulator = self.ndi = None
        self.midi_map_path: Path | None = None
        self._closers: list[Callable[[], None]] = []

    def on_close(self, closer: Callable[[], None]) -> None:
        self._closers.append(closer)

    def close(self) -> None:
        """Stop every part, last started first; a part that fails to stop is reported, the rest go on."""
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except (OSError, RuntimeError, UserError) as error:
                self.report("warning", f"stopping a live control: {error}")

    def __enter__(self) -> Controls:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def attach_controls(engine, args: argparse.Namespace, report: Report) -> Controls:
    """Start what ``args`` asks for on a running ``engine``; returns :class:`Controls` (a context manager).
    Raises UserError for bad options or a port/device that cannot be opened (after stopping what started)."""
    controls = Controls(report)
    try:
        _attach(controls, engine, args, report)
    except BaseException:
        controls.close()
        raise
    return controls


def _attach(controls: Controls, engine, args: argparse.Namespace, report: Report) -> None:
    from tpos_live.control.knobs import PresetBank, load_preset_folder
    from tpos_live.control.tempo import BeatClock, BeatQuantiser, TapTempo

    try:
        controls.clock = BeatClock(args.beats_per_bar)
    except ValueError as error:
        raise UserError(f"--beats-per-bar: {error}") from None
    controls.tap = TapTempo(controls.clock)
    if args.quantise != "off":
        controls.quantiser = BeatQuantiser(controls.clock, args.quantise, report=report).start()
        controls.on_close(controls.quantiser.stop)
    if args.presets is not None:
        schedule = controls.quantiser.schedule if controls.quantiser is not None else None
        controls.presets = PresetBank(load_preset_folder(args.presets), engine.control, schedule,
                                      prefetch=engine.prefetch)
    if args.tempo == "audio" and args.quantise != "off":
        controls.tempo = _follow_tempo(engine.source, controls.clock, controls, _bpm_range(args.bpm_range))
    if args.osc_port is not None:
        _start_osc(controls, engine, args, report)
    if args.midi_learn and args.midi_port is None:
        raise UserError("--midi-learn learns from a MIDI input: give it with --midi-port")
    if args.midi_port is not None:
        _start_midi(controls, engine, args, report)
    if args.modulate:
        _start_modulation(controls, engine, args.modulate, report)
    if args.ndi:
        from tpos_live.control.ndi import NdiOutput

        controls.ndi = NdiOutput(engine, args.ndi, report).start()
        controls.on_close(controls.ndi.stop)
        report("info", f"NDI: sending as '{args.ndi}'")


def _start_osc(controls: Controls, engine, args: argparse.Namespace, report: Report) -> None:
    from tpos_live.control.osc import OscConfig, OscControl, OscServer

    try:
        config = OscConfig(args.osc_host, args.osc_port)
    except ValueError as error:
        raise UserError(f"--osc-port: {error}") from None
    osc = OscControl(engine.control, controls.presets, controls.tap.tap, report, clock=controls.clock)
    controls.osc = OscServer(osc, config).start()
    controls.on_close(controls.osc.stop)
    report("info", f"OSC: listening on {controls.osc.host}:{controls.osc.port} (docs/control.md)")


def _start_midi(controls: Controls, engine, args: argparse.Namespace, report: Report) -> None:
    from tpos_live.control.midi import MidiController, default_mappings_path, load_mappings, open_input, save_mappings

    path = args.midi_map or default_mappings_path()
    mappings = load_mappings(path) if path.exists() else []
    controls.midi = MidiController(engine.control, mappings, controls.presets, controls.tap.tap, report)
    controls.midi_map_path = path
    if args.midi_learn:
        try:
            controls.midi.learn_in_turn([t.strip() for t in args.midi_learn.split(",") if t.strip()])
        except ValueError as error:
            raise UserError(f"--midi-learn: {error}") from None
        controls.on_close(lambda: report("info", f"MIDI mappings saved to "
                                                 f"{save_mappings(controls.midi.mappings, path)}"))
    port = open_input(args.midi_port, controls.midi)
    controls.on_close(port.close)
    report("info", f"MIDI: listening to '{port.name}' ({len(mappings)} mappings from {path})")


def _start_modulation(controls: Controls, engine, specs: list[str], report: Report) -> None:
    from tpos_live.control.modulation import Modulator, parse_route

    try:
        routes = [parse_route(spec) for spec in specs]
    except ValueError as error:
        raise UserError(f"--modulate: {error}") from None
    controls.modulator = Modulator(engine.control, routes, engine.source.sample_rate, report).start(engine.source)
    controls.on_close(controls.modulator.stop)


def _bpm_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        raise UserError(f"--bpm-range takes LOW:HIGH in BPM, like 60:200; got {text!r}") from None
    return low, high


def _follow_tempo(source, clock, controls: Controls, bpm_range: tuple[float, float]):
    from tpos_live.control.tempo import SourceTempo

    try:
        follower = SourceTempo(source, clock, *bpm_range).start()
    except ValueError as error:
        raise UserError(f"--bpm-range: {error}") from None
    controls.on_close(follower.stop)
    return follower
