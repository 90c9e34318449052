"""``tpos-live devices`` and ``tpos-live live``: the live engine from the command line.

``build_parser()`` in :mod:`tpos_live.cli` adds them with ``add_devices_command(commands)`` and
``add_live_command(commands)``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tpos_live.control import add_control_arguments, attach_controls
from tpos_live.errors import UserError

LIVE_EPILOG = """\
examples:
  tpos-live devices
  tpos-live live --device "USB Audio" --prompt "neon city at night" --fps 24 --record set1.mp4 --duration 600
  tpos-live live --file set.mp3 --play-to default --prompt "a forest"      # rehearse from a file, hear it
  tpos-live live --synthetic --model tiny --size 128x128 --prompt "x"     # no sound card, no weights

Once a second it prints fps, audio-to-frame latency, stage times, dropped frames and audio overflows.
Ctrl-C stops cleanly and finishes the recording."""


def add_devices_command(commands) -> None:
    p = commands.add_parser("devices", help="list audio capture devices",
                            description="List the audio devices PortAudio sees, for --device and --play-to.")
    p.add_argument("--all", action="store_true", help="list output devices too")
    p.set_defaults(run=run_devices)


def run_devices(args: argparse.Namespace) -> int:
    from tpos_live.audio.capture import list_devices

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


def add_sound_options(p: argparse.ArgumentParser, title: str, device_default: str,
                      gain_default: float | None) -> None:
    """Where the sound comes from: a device, a file played in real time, or a test signal (live and app)."""
    audio = p.add_argument_group(title)
    where = audio.add_mutually_exclusive_group()
    where.add_argument("--device", help=f"capture device: index or (part of) its name (default: {device_default})")
    where.add_argument("--file", type=Path, help="play this audio file in real time instead of capturing")
    where.add_argument("--synthetic", action="store_true", help="a built-in test signal instead of capturing")
    audio.add_argument("--host-api", help="look for --device on this host API only (ALSA, JACK, WASAPI, ...)")
    audio.add_argument("--sample-rate", type=int, help="capture rate (default: the encoder's if the device "
                                                       "supports it, else the device's)")
    audio.add_argument("--channel", type=int, help="use only this input channel (0 is the first; default: "
                                                   "mix all down)")
    gain_help = "input gain in dB (" + ("the saved one" if gain_default is None else f"{gain_default:g}") + ")"
    audio.add_argument("--gain", type=float, default=gain_default, dest="gain_db", help=gain_help)
    audio.add_argument("--play-to", help="with --file: also play it on this output device")
    audio.add_argument("--loop", action="store_true", help="with --file: start over at the end")


def add_live_command(commands) -> None:
    from tpos_live.cli import parse_size

    p = commands.add_parser("live", help="turn live sound into audio-reactive frames",
                            description="Capture sound (a device, a file played in real time, or a test "
                                        "signal) and render frames that follow it, continuously.",
                            epilog=LIVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sound_options(p, "sound", device_default="the default input", gain_default=0.0)
    scene = p.add_argument_group("scene")
    scene.add_argument("--prompt", required=True, help="what the frames show")
    scene.add_argument("--negative-prompt", default="", help="what they should not show")
    scene.add_argument("--seed", type=int, help="noise seed (default 42)")
    scene.add_argument("--init-image", type=Path, help="start from this image instead of the prompt alone")
    output = p.add_argument_group("output")
    output.add_argument("--size", type=parse_size, metavar="WxH", help="frame size (default 512x512)")
    output.add_argument("--fps", type=float, help="frame-rate cap (default 24)")
    output.add_argument("--batch", type=int, dest="batch_frames", help="frames rendered per batch (1)")
    output.add_argument("--hop", type=float, default=0.25, help="seconds between encoder updates (0.25)")
    output.add_argument("--crossfade", type=float, default=0.5, help="seconds a new scene fades in (0.5)")
    output.add_argument("--record", type=Path, metavar="MP4", help="record the frames and the sound here")
    output.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: "
                                                                          "at Ctrl-C)")
    _add_sampling_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no stats lines (warnings still show)")
    add_control_arguments(p)
    p.set_defaults(run=run_live, mode="fast")


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    """The render command's sampling and model options, with the same names and defaults."""
    sampling = p.add_argument_group("sampling and guidance (as for render)")
    sampling.add_argument("--steps", type=int, help="denoising steps (the model's)")
    sampling.add_argument("--sampler", choices=("lcm", "ddim", "plms"), help="lcm (default), ddim, plms")
    sampling.add_argument("--guidance", type=float, dest="text_guidance", help="text guidance (the model's)")
    sampling.add_argument("--audio-guidance", type=float, help="audio guidance g_s (7)")
    sampling.add_argument("--threshold", type=float, help="guidance quantile threshold in [0, 1) (0.8)")
    sampling.add_argument("--momentum", type=float, dest="momentum_scale", help="momentum scale (0.3)")
    sampling.add_argument("--momentum-beta", type=float, help="momentum beta (0.6)")
    delta = sampling.add_mutually_exclusive_group()
    delta.add_argument("--delta", type=int, dest="delta_timestep", metavar="T", help="guide steps with t < T")
    delta.add_argument("--delta-step", type=int, metavar="I", help="guide from step index I (the last step)")
    sampling.add_argument("--envelope", type=float, dest="envelope_depth", metavar="DEPTH",
                          help="how much loudness scales g_s, 0..1 (0.75)")
    sampling.add_argument("--attack", type=float, dest="attack_seconds", help="envelope attack, s (0.01)")
    sampling.add_argument("--release", type=float, dest="release_seconds", help="envelope release, s (0.25)")
    models = p.add_argument_group("models (as for render)")
    models.add_argument("--model", default="sd15-lcm", help="sd15-lcm (default), sd-turbo, tiny, a folder, "
                                                            "a .safetensors file or a repo id")
    models.add_argument("--lora", help="a LoRA to fuse")
    models.add_argument("--lora-scale", type=float, default=1.0, help="LoRA strength (1.0)")
    models.add_argument("--taesd", help="TAESD decoder (folder or repo id), or 'none'")
    models.add_argument("--encoder", help="audio conditioning: a TPoS checkpoint, 'random' (untrained TPoS), or "
                                          "'clap' / 'clap:FOLDER|REPO_ID' (zero-shot concept bank); default: "
                                          "the TPoS encoder set for the model")
    models.add_argument("--concepts", type=Path, metavar="TOML",
                        help="concept bank TOML for CLAP conditioning (default: the bundled bank)")
    models.add_argument("--decoder", choices=("taesd", "vae"), help="taesd (default) or the full vae")
    models.add_argument("--compute-device", default="auto", metavar="DEVICE",
                        help="where the networks run: cpu, cuda, cuda:N or auto (default); --device is the "
                             "sound device here")
    models.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="network precision (auto: float16 on CUDA, float32 on CPU)")


def load_live_models(args: argparse.Namespace, say, progress: bool):
    """The engine's parts that come from the options: (live settings, model stack, render settings,
    conditioning provider). Shared by `live` and `app`."""
    from tpos_live.cli import settings_from_args
    from tpos_live.conditioning.providers import load_provider
    from tpos_live.diffusion.loading import ModelSpec, load_stack
    from tpos_live.diffusion.renderer import TPoSRenderer
    from tpos_live.live.engine import LiveSettings
    from tpos_live.runtime import resolve_device

    try:
        live = LiveSettings(hop_seconds=args.hop, crossfade_seconds=args.crossfade)
    except ValueError as error:
        raise UserError(str(error)) from None
    compute, dtype = resolve_device(args.compute_device, args.dtype)
    model = ModelSpec(model=args.model, lora=args.lora, lora_scale=args.lora_scale, taesd=args.taesd,
                      device=compute, dtype=dtype)
    settings = settings_from_args(args, model)
    stack = load_stack(model, progress=progress)
    say(f"model: {stack.name} on {stack.device} ({str(stack.dtype).removeprefix('torch.')})")
    provider = load_provider(args.encoder, stack, TPoSRenderer(stack, settings).text_space(), say=say,
                             concepts=args.concepts)
    if stack.random_weights:
        say(f"warning: model '{stack.name}' has RANDOM weights: frames show noise patterns, not images")
    return live, stack, settings, provider


def run_live(args: argparse.Namespace) -> int:
    from tpos_live.live.engine import LiveEngine
    from tpos_live.video.writer import check_output_path

    report = _reporter(args.quiet)
    say = _sayer(args.quiet)
    _check_source_options(args)
    if args.duration is not None and not args.duration > 0:
        raise UserError(f"--duration must be positive seconds, got {args.duration}")
    if args.record is not None:
        check_output_path(args.record)
    live, stack, settings, provider = load_live_models(args, say, progress=not args.quiet)
    source = _make_source(args, provider.sample_rate, report)
    say(f"sound: {source.description}")
    engine = LiveEngine(stack, settings, provider, source, args.prompt, args.negative_prompt, live=live,
                        init_image=args.init_image, report=report)
    engine.start()
    recorded = None
    try:
        if args.record is not None:
            engine.start_recording(args.record)
        with attach_controls(engine, args, report):
            _run_until_done(engine, args.duration, say)
    except KeyboardInterrupt:
        say("stopping (Ctrl-C)")
    finally:
        recorded = engine.stop()
    final = engine.stats()
    say(f"{final.frames} frames, {final.dropped_frames} dropped, {final.overflows} audio overflows, "
        f"{final.counters['render_errors'] + final.counters['bad_frames']} render faults")
    if recorded is not None:
        say(f"wrote {recorded}")
    return 0


def _run_until_done(engine, duration: float | None, say) -> None:
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


def _check_source_options(args: argparse.Namespace) -> None:
    if args.file is None and (args.play_to is not None or args.loop):
        raise UserError("--play-to and --loop go with --file: give the file to play")
    if (args.file is not None or args.synthetic) and (args.host_api or args.sample_rate):
        raise UserError("--host-api and --sample-rate choose how a device captures: leave them out with "
                        "--file or --synthetic")


def _make_source(args: argparse.Namespace, preferred_rate: int, report):
    from tpos_live.audio.capture import CaptureConfig, DeviceSource, FileSource, SyntheticSource, demo_pattern

    try:
        if args.file is not None:
            return FileSource(args.file, output_device=args.play_to, loop=args.loop, channel=args.channel,
                              gain_db=args.gain_db, sample_rate=preferred_rate, report=report)
        if args.synthetic:
            return SyntheticSource(demo_pattern(preferred_rate), preferred_rate, gain_db=args.gain_db,
                                   report=report, name="test signal (silence, noise, 440 Hz, 1760 Hz)")
        config = CaptureConfig(device=args.device, host_api=args.host_api, sample_rate=args.sample_rate,
                               channel=args.channel, gain_db=args.gain_db)
    except ValueError as error:
        raise UserError(str(error)) from None
    return DeviceSource(config, preferred_rate=preferred_rate, report=report)


def _reporter(quiet: bool):
    def report(level: str, message: str) -> None:
        if level != "info" or not quiet:
            print(f"{level}: {message}", file=sys.stderr, flush=True)

    return report


def _sayer(quiet: bool):
    def say(message: str, stats: bool = False) -> None:
        if not quiet or (not stats and message.startswith(("warning", "error"))):
            print(message, file=sys.stderr, flush=True)

    return say
