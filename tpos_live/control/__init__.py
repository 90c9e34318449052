"""Playing the engine live: OSC, MIDI, tempo (audio, taps, MIDI clock, Ableton Link), audio and
tempo-synced modulation, and video out (NDI, Spout, Syphon) (docs/control.md).

A session starts what a :class:`~tpos_live.control.spec.ControlSpec` and an
:class:`~tpos_live.control.spec.OutputSpec` ask for on a running engine::

    with attach_controls(engine, ControlSpec(osc_port=9000), report, OutputSpec(ndi="tpos")):
        ...                                                              # everything stops on leaving

Each part also works alone: :class:`~tpos_live.control.osc.OscControl`,
:class:`~tpos_live.control.midi.MidiController`, :class:`~tpos_live.control.tempo.OnsetTempo`,
:class:`~tpos_live.control.tempo.MidiClockTempo`, :class:`~tpos_live.control.link.LinkTempo`,
:class:`~tpos_live.control.modulation.Modulator`, :class:`~tpos_live.control.video_out.VideoOutput`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tpos_live.control.spec import ControlSpec, OutputSpec
from tpos_live.errors import UserError
from tpos_live.reporting import Reporter

__all__ = ["ControlSpec", "Controls", "OutputSpec", "attach_controls"]


class Controls:
    """Everything :func:`attach_controls` started; :meth:`close` (or leaving ``with``) stops it all."""

    def __init__(self, report: Reporter) -> None:
        self.report = report
        self.osc = self.midi = self.tempo = self.tap = self.clock = self.quantiser = None
        self.presets = self.modulator = self.ndi = self.link = self.midi_clock = None
        self.video_outputs: dict[str, object] = {}  # "ndi"/"spout"/"syphon" -> its VideoOutput
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


def attach_controls(engine, spec: ControlSpec, report: Reporter, outputs: OutputSpec | None = None) -> Controls:
    """Start what ``spec`` asks for on a running ``engine``, and the video outputs of ``outputs``;
    returns :class:`Controls` (a context manager). Raises UserError for bad options or a port, device
    or output that cannot be opened (after stopping what started)."""
    controls = Controls(report)
    try:
        _attach(controls, engine, spec, report)
        _start_video_outputs(controls, engine, outputs or OutputSpec(), report)
    except BaseException:
        controls.close()
        raise
    return controls


def _attach(controls: Controls, engine, spec: ControlSpec, report: Reporter) -> None:
    from tpos_live.control.modulation import TEMPO_FEATURES
    from tpos_live.control.preset_bank import PresetBank, load_preset_folder
    from tpos_live.control.tempo import BeatClock, BeatQuantiser, TapTempo

    try:
        controls.clock = BeatClock(spec.beats_per_bar)
    except ValueError as error:
        raise UserError(f"--beats-per-bar: {error}") from None
    controls.tap = TapTempo(controls.clock)
    if spec.quantise != "off":
        controls.quantiser = BeatQuantiser(controls.clock, spec.quantise, report=report).start()
        controls.on_close(controls.quantiser.stop)
    if spec.presets is not None:
        schedule = controls.quantiser.schedule if controls.quantiser is not None else None
        presets = load_preset_folder(spec.presets, may_be_empty=spec.presets_may_be_empty)
        controls.presets = PresetBank(presets, engine.control, schedule, prefetch=engine.prefetch)
    synced = any(route.split(":", 1)[0] in TEMPO_FEATURES for route in spec.modulate)
    local_tempo = not spec.link or spec.link_lead  # following Link, the session's tempo rules
    if spec.tempo == "audio" and local_tempo and (spec.quantise != "off" or synced or spec.link_lead):
        controls.tempo = _follow_tempo(engine.sound, controls.clock, controls, spec.bpm_range)
    if spec.tempo == "midi-clock":
        from tpos_live.control.tempo import MidiClockTempo

        controls.midi_clock = MidiClockTempo(controls.clock)
    if spec.link:
        _start_link(controls, spec, report)
    if spec.osc_port is not None:
        _start_osc(controls, engine, spec, report)
    if spec.midi_port is not None:
        _start_midi(controls, engine, spec, report)
    if spec.modulate:
        _start_modulation(controls, engine, spec.modulate, report)


def _start_link(controls: Controls, spec: ControlSpec, report: Reporter) -> None:
    from tpos_live.control.link import LinkTempo

    controls.link = LinkTempo(controls.clock, lead=spec.link_lead, report=report).start()
    controls.on_close(controls.link.stop)
    role = "leading it with the " + ("taps" if spec.tempo == "tap" else "sound's tempo") if spec.link_lead \
        else "following its tempo and beat"
    report("info", f"Ableton Link: joined the session ({controls.link.peers} other peers now), {role}")


def _start_video_outputs(controls: Controls, engine, outputs: OutputSpec, report: Reporter) -> None:
    from tpos_live.control.video_out import VideoOutput, make_sender

    for output, name in outputs.video_outputs().items():
        sender = make_sender(output, name)
        started = VideoOutput(engine, sender, report).start()
        controls.on_close(started.stop)
        controls.video_outputs[output] = started
        report("info", f"{sender.kind}: sending as '{name}'")
    controls.ndi = controls.video_outputs.get("ndi")


def _start_osc(controls: Controls, engine, spec: ControlSpec, report: Reporter) -> None:
    from tpos_live.control.osc import OscConfig, OscControl, OscServer

    try:
        config = OscConfig(spec.osc_host, spec.osc_port)
    except ValueError as error:
        raise UserError(f"--osc-port: {error}") from None
    osc = OscControl(engine.control, controls.presets, controls.tap.tap, report, clock=controls.clock)
    controls.osc = OscServer(osc, config).start()
    controls.on_close(controls.osc.stop)
    report("info", f"OSC: listening on {controls.osc.host}:{controls.osc.port} (docs/control.md)")


def _start_midi(controls: Controls, engine, spec: ControlSpec, report: Reporter) -> None:
    from tpos_live.control.midi import MidiController, default_mappings_path, load_mappings, open_input, save_mappings

    path = spec.midi_map or default_mappings_path()
    mappings = load_mappings(path) if path.exists() else []
    clock = None if controls.midi_clock is None else controls.midi_clock.handle
    controls.midi = MidiController(engine.control, mappings, controls.presets, controls.tap.tap, report, clock=clock)
    controls.midi_map_path = path
    if spec.midi_learn:
        try:
            controls.midi.learn_in_turn(list(spec.midi_learn))
        except ValueError as error:
            raise UserError(f"--midi-learn: {error}") from None
        controls.on_close(lambda: report("info", f"MIDI mappings saved to "
                                                 f"{save_mappings(controls.midi.mappings, path)}"))
    port = open_input(spec.midi_port, controls.midi)
    controls.on_close(port.close)
    report("info", f"MIDI: listening to '{port.name}' ({len(mappings)} mappings from {path})")


def _start_modulation(controls: Controls, engine, specs: list[str], report: Reporter) -> None:
    from tpos_live.control.modulation import Modulator, parse_route

    try:
        routes = [parse_route(spec) for spec in specs]
    except ValueError as error:
        raise UserError(f"--modulate: {error}") from None
    controls.modulator = Modulator(engine.control, routes, engine.sound.sample_rate, report,
                                   clock=controls.clock).start(engine.sound)
    controls.on_close(controls.modulator.stop)


def _follow_tempo(sound, clock, controls: Controls, bpm_range: tuple[float, float]):
    from tpos_live.control.tempo import SourceTempo

    try:
        follower = SourceTempo(sound, clock, *bpm_range).start()
    except ValueError as error:
        raise UserError(f"--bpm-range: {error}") from None
    controls.on_close(follower.stop)
    return follower
