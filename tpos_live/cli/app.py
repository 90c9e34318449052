"""``tpos-live app``: the desktop app.

It takes the live command's options (sound, scene, sampling, models, backend, live control) and opens
the main window on a running session. ``--smoke SECONDS`` runs the app that long (offscreen when there
is no display, on the tiny stack and the test signal unless told otherwise), then prints fps and
latency and exits: 0 when frames reached the preview and the output window, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

from tpos_live.app.settings import AppSettings
from tpos_live.cli import options
from tpos_live.config import RenderSettings
from tpos_live.errors import UserError

DEFAULT_PROMPT = "a photo of a beautiful beach with a blue sky"
SMOKE_MODEL = "tiny"
SMOKE_SIZE = (128, 128)

EPILOG = """\
examples:
  tpos-live app                                      # the saved device (or the default input)
  tpos-live app --device "USB Audio" --prompt "neon city at night" --osc-port 9000
  tpos-live app --model tiny --synthetic --size 128x128   # no sound card, no weights
  tpos-live app --smoke 10                           # ten seconds on the tiny stack and the test signal

Output window hotkeys: F fullscreen, Space freeze, B blackout, Left/Right previous/next preset."""


def add_command(commands) -> None:
    p = commands.add_parser("app", help="open the desktop app (preview, scenes, presets, output window)",
                            description="The live engine in a desktop window: preview, scene and audio "
                                        "panels, presets, recording and a fullscreen output window.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_sound_options(p, device_default="the device saved in the app settings", gain_default=None)
    options.add_scene_options(p, prompt_default=DEFAULT_PROMPT, init_image_help="start every scene from this image")
    output = p.add_argument_group("output")
    options.add_frame_options(output, fps_help=f"frame-rate cap (default {RenderSettings.fps:g})")
    options.add_live_timing_options(output, None, "seconds a scene switch takes (default: the saved crossfade, "
                                                  f"{AppSettings.crossfade_seconds:g} at first)")
    output.add_argument("--screen", type=int, help="screen index for the output window (default: saved)")
    options.add_sampling_options(p)
    options.add_model_options(p, model_default=None)
    options.add_control_options(p)
    p.add_argument("--clap-model", metavar="FOLDER|REPO_ID",
                   help="the CLAP model the scene panel's CLAP choice loads (laion/clap-htsat-unfused)")
    p.add_argument("--smoke", type=float, metavar="SECONDS",
                   help=f"run this long, print fps and latency, exit ({SMOKE_MODEL} stack at "
                        f"{SMOKE_SIZE[0]}x{SMOKE_SIZE[1]} and the test signal by default)")
    p.set_defaults(run=run, mode="fast", record=None)


def run(args: argparse.Namespace) -> int:
    from tpos_live.app.settings import load_settings, settings_path

    check_args(args)
    settings, problem = load_settings()
    if problem is not None:
        print(f"warning: {problem}", file=sys.stderr, flush=True)
    settings = with_arguments(settings, args)
    spec = app_spec(args, settings)  # bad flags (e.g. --spout off Windows) fail here, before any window
    from tpos_live.session import check_live

    sound = check_live(spec)
    prepare_display(smoke=args.smoke is not None)
    from tpos_live.app.launch import open_window

    return open_window(spec, settings, settings_path(), problem, smoke_seconds=args.smoke,
                       fallback_to_test_signal=not source_given(args), sound=sound)


def check_args(args: argparse.Namespace) -> None:
    if args.smoke is not None and not 0 < args.smoke <= 3600:
        raise UserError(f"--smoke must be 0..3600 seconds, got {args.smoke}")
    if args.screen is not None and args.screen < 0:
        raise UserError(f"--screen must be a screen index (0 is the first), got {args.screen}")
    if args.smoke is not None:
        args.model = args.model or SMOKE_MODEL
        args.size = args.size or SMOKE_SIZE
        if args.device is None and args.file is None:
            args.synthetic = True
    args.model = args.model or options.DEFAULT_MODEL


def source_given(args: argparse.Namespace) -> bool:
    return args.file is not None or args.synthetic or args.device is not None


def with_arguments(settings, args: argparse.Namespace):
    """The saved app settings with what the command line overrides for this session."""
    changes = {}
    if args.gain_db is not None:
        changes["gain_db"] = args.gain_db
    if args.screen is not None:
        changes["output_screen"] = args.screen
    if args.crossfade is not None:
        changes["crossfade_seconds"] = args.crossfade
    if args.presets is not None:
        changes["presets_folder"] = str(args.presets)
    return options.checked(replace, settings, **changes)


def app_spec(args: argparse.Namespace, settings):
    """The session: the command line's, with the saved device, gain, crossfade and presets folder for
    what it leaves out. The presets folder is the app's (its preset list, OSC and MIDI recall alike)."""
    from tpos_live.app.settings import SYNTHETIC_DEVICE
    from tpos_live.cli.live import live_spec

    spec = live_spec(args, switchable=True)
    source = spec.source if source_given(args) else options.checked(
        replace, spec.source, kind="synthetic" if settings.device == SYNTHETIC_DEVICE else "device",
        device=None if settings.device == SYNTHETIC_DEVICE else settings.device)
    source = replace(source, gain_db=settings.gain_db)
    control = options.checked(replace, spec.control, presets=settings.presets_path(), presets_may_be_empty=True)
    return replace(spec, source=source, control=control,
                   live=options.checked(replace, spec.live, crossfade_seconds=settings.crossfade_seconds))


def prepare_display(smoke: bool) -> None:
    """Qt needs a display; a smoke run without one draws offscreen instead."""
    has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform != "linux"
    if has_display or os.environ.get("QT_QPA_PLATFORM"):
        return
    if not smoke:
        raise UserError("there is no display (DISPLAY is not set): run the app in a desktop session, or use "
                        "'tpos-live live' in a terminal")
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
