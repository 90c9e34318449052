"""``tpos-live devices`` and ``tpos-live live``: the live engine from a terminal."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tpos_live.cli import options
from tpos_live.config import RenderSettings
from tpos_live.errors import UserError
from tpos_live.live.settings import LiveSettings
from tpos_live.preflight import existed, written

EPILOG = """\
examples:
  tpos-live devices
  tpos-live live --device "USB Audio" --prompt "neon city at night" --fps 24 --record set1.mp4 --duration 600
  tpos-live live --file set.mp3 --play-to default --prompt "a forest"      # rehearse from a file, hear it
  tpos-live live --synthetic --model tiny --size 128x128 --prompt "x"     # no sound card, no weights

At the start it says how the frames are made ("frames: keyframes (one UNet call per condition)" where a
frame has one guided step, else "frames: per frame (N guided steps)"; --frame-path forces one). Once a second
it prints fps, keyframes/s, audio-to-frame latency, stage times, dropped frames and audio overflows.
Ctrl-C stops cleanly and finishes the recording."""


def add_devices_command(commands) -> None:
    p = commands.add_parser("devices", help="list audio capture devices",
                            description="List the audio devices PortAudio sees, for --device and --play-to.")
    p.add_argument("--all", action="store_true", help="list output devices too")
    p.set_defaults(run=run_devices)


def run_devices(args: argparse.Namespace) -> int:
    from tpos_live.audio.devices import list_devices

    devices = list_devices()
    inputs = [d for d in devices if d.input_channels > 0]
    if not inputs:
        print("no capture devices found: connect one (or start the sound server), or use --file or "
              "--synthetic")
    else:
        print("capture devices (* = default):")
        for d in inputs:
            mark = "*" if d.is_default_input else " "
            print(f" {mark}{d.index:3d}: {d.name} [{d.host_api}], {d.input_channels} ch, "
                  f"{d.default_sample_rate:.0f} Hz")
    if args.all:
        print("output devices (* = default):")
        for d in (d for d in devices if d.output_channels > 0):
            mark = "*" if d.is_default_output else " "
            print(f" {mark}{d.index:3d}: {d.name} [{d.host_api}], {d.output_channels} ch, "
                  f"{d.default_sample_rate:.0f} Hz")
    return 0


def add_command(commands) -> None:
    p = commands.add_parser("live", help="turn live sound into audio-reactive frames",
                            description="Capture sound (a device, a file played in real time, or a test "
                                        "signal) and render frames that follow it, continuously.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_sound_options(p, device_default="the default input", gain_default=0.0)
    options.add_scene_options(p)
    output = p.add_argument_group("output")
    options.add_frame_options(output, fps_help=f"frame-rate cap (default {RenderSettings.fps:g})")
    options.add_live_timing_options(output, None, f"seconds a new scene fades in ({LiveSettings.crossfade_seconds:g})")
    output.add_argument("--record", type=Path, metavar="MP4", help="record the frames and the sound here")
    output.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: "
                                                                          "at Ctrl-C)")
    options.add_sampling_options(p)
    options.add_model_options(p)
    options.add_control_options(p)
    options.add_quiet_option(p, "no stats lines (warnings still show)")
    p.set_defaults(run=run, mode="fast")


def live_spec(args: argparse.Namespace, switchable: bool = False):
    """The session the live flags describe (``switchable``: the app, which can switch the backend while
    it runs)."""
    from tpos_live.session import LiveSpec

    return LiveSpec(scene=options.scene_spec(args), model=options.model_spec(args),
                    backend=options.backend_spec(args, switchable),
                    conditioning=options.conditioning_spec(args),
                    source=options.source_spec(args), live=options.live_settings(args),
                    control=options.control_spec(args), outputs=options.output_spec(args))


def run(args: argparse.Namespace) -> int:
    from tpos_live.session import LiveSession, check_live, load_models

    if args.duration is not None and not args.duration > 0:
        raise UserError(f"--duration must be positive seconds, got {args.duration}")
    spec = live_spec(args)
    if spec.control.quantise != "off" and spec.control.presets is None:
        raise UserError("--quantise times preset changes: give --presets FOLDER too")
    sound = check_live(spec)
    replacing = existed(spec.outputs.record)
    say = sayer(args.quiet)
    models = load_models(spec.model, spec.backend, spec.conditioning, spec.scene, say=say, progress=not args.quiet)
    session = LiveSession(spec, models, report=reporter(args.quiet), sound=sound)
    say(f"sound: {session.engine.source.description}")
    say(f"frames rendered by {session.backend_description}")
    say(session.engine.describe_frames())
    recorded = None
    try:
        session.start()
        run_until_done(session.engine, args.duration, say)
    except KeyboardInterrupt:
        say("stopping (Ctrl-C)")
    finally:
        recorded = session.stop()
    final = session.engine.stats()
    counters = final.counters
    keyframes = f"{counters['keyframes']} keyframes, " if session.engine.uses_keyframes else ""
    say(f"{final.frames} frames, {keyframes}{counters['unet_calls']} UNet calls (scenes aside), "
        f"{final.dropped_frames} dropped, {final.overflows} audio overflows, "
        f"{counters['render_errors'] + counters['bad_frames'] + counters['keyframe_errors']} render faults")
    if recorded is not None:
        say(written(recorded, replacing))
    return 0


def run_until_done(engine, duration: float | None, say) -> None:
    """Print a stats line every second until ``duration`` has passed (or the file source has ended)."""
    started = time.monotonic()
    next_line = started + 1.0
    while duration is None or time.monotonic() - started < duration:
        time.sleep(max(0.0, min(next_line, started + (duration or 1e9)) - time.monotonic()))
        if engine.source.state == "finished":
            say("the file has ended")
            return
        if time.monotonic() >= next_line:
            say(engine.stats().line(), stats=True)
            next_line += 1.0


def reporter(quiet: bool):
    def report(level: str, message: str) -> None:
        if level != "info" or not quiet:
            print(f"{level}: {message}", file=sys.stderr, flush=True)

    return report


def sayer(quiet: bool):
    def say(message: str, stats: bool = False) -> None:
        if not quiet or (not stats and message.startswith(("warning", "error"))):
            print(message, file=sys.stderr, flush=True)

    return say
