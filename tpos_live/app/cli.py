"""``tpos-live app``: the desktop app (``build_parser()`` adds it with ``add_app_command(commands)``).

It takes the live command's options (sound, scene, sampling, models) and opens the main window on a
running engine. ``--smoke SECONDS`` runs the app that long (offscreen when there is no display, on
the tiny stack and the test signal unless told otherwise), then prints fps and latency and exits:
0 when frames reached the preview and the output window, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tpos_live.errors import UserError

DEFAULT_PROMPT = "a photo of a beautiful beach with a blue sky"
SMOKE_MODEL = "tiny"
SMOKE_SIZE = (128, 128)

APP_EPILOG = """\
examples:
  tpos-live app                                      # the saved device (or the default input)
  tpos-live app --device "USB Audio" --prompt "neon city at night"
  tpos-live app --model tiny --synthetic --size 128x128   # no sound card, no weights
  tpos-live app --smoke 10                           # ten seconds on the tiny stack and the test signal

Output window hotkeys: F fullscreen, Space freeze, B blackout, Left/Right previous/next preset."""


def add_app_command(commands) -> None:
    from tpos_live.cli import parse_size
    from tpos_live.live.cli import _add_sampling_options, add_sound_options

    p = commands.add_parser("app", help="open the desktop app (preview, scenes, presets, output window)",
                            description="The live engine in a desktop window: preview, scene and audio "
                                        "panels, presets, recording and a fullscreen output window.",
                            epilog=APP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sound_options(p, "sound", device_default="the device saved in the app settings", gain_default=None)
    scene = p.add_argument_group("scene")
    scene.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"what the frames show ({DEFAULT_PROMPT!r})")
    scene.add_argument("--negative-prompt", default="", help="what they should not show")
    scene.add_argument("--seed", type=int, help="noise seed (default 42)")
    scene.add_argument("--init-image", type=Path, help="start every scene from this image")
    output = p.add_argument_group("output")
    output.add_argument("--size", type=parse_size, metavar="WxH",
                        help=f"frame size (default 512x512; {SMOKE_SIZE[0]}x{SMOKE_SIZE[1]} with --smoke)")
    output.add_argument("--fps", type=float, help="frame-rate cap (default 24)")
    output.add_argument("--batch", type=int, dest="batch_frames", help="frames rendered per batch (1)")
    output.add_argument("--hop", type=float, default=0.25, help="seconds between encoder updates (0.25)")
    output.add_argument("--crossfade", type=float, help="seconds a scene switch takes (default: the saved "
                                                        "crossfade, 1.0 at first)")
    output.add_argument("--screen", type=int, help="screen index for the output window (default: saved)")
    _add_sampling_options(p)
    conditioning = p.add_argument_group("conditioning picker")
    conditioning.add_argument("--clap-model", metavar="FOLDER|REPO_ID",
                              help="the CLAP model the scene panel's CLAP choice loads (laion/clap-htsat-unfused)")
    p.add_argument("--smoke", type=float, metavar="SECONDS",
                   help="run this long, print fps and latency, exit (tiny stack and test signal by default)")
    p.set_defaults(run=run_app, mode="fast", model=None, quiet=False)


def run_app(args: argparse.Namespace) -> int:
    from tpos_live.app.settings import load_settings, settings_path

    _check_args(args)
    settings, problem = load_settings()
    if problem is not None:
        print(f"warning: {problem}", file=sys.stderr, flush=True)
    settings = _with_arguments(settings, args)
    _prepare_display(smoke=args.smoke is not None)
    recipe, engine = _start_engine(args, settings)
    from PySide6.QtWidgets import QApplication

    from tpos_live.app.main_window import MainWindow, load_theme

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("tpos-live")
    app.setStyleSheet(load_theme())
    window = MainWindow(recipe, engine, _source_factory(args, recipe), _input_names, settings,
                        settings_path())
    if problem is not None:
        window.say("warning", problem)
    window.show()
    if args.smoke is None:
        app.exec()
        window.shutdown()
        return 0
    return _smoke(window, args.smoke)


def _check_args(args: argparse.Namespace) -> None:
    from tpos_live.live.cli import _check_source_options

    _check_source_options(args)
    if args.smoke is not None and not 0 < args.smoke <= 3600:
        raise UserError(f"--smoke must be 0..3600 seconds, got {args.smoke}")
    if args.screen is not None and args.screen < 0:
        raise UserError(f"--screen must be a screen index (0 is the first), got {args.screen}")
    if args.smoke is not None:
        args.model = args.model or SMOKE_MODEL
        args.size = args.size or SMOKE_SIZE
        if args.device is None and args.file is None:
            args.synthetic = True
    args.model = args.model or "sd15-lcm"


def _with_arguments(settings, args: argparse.Namespace):
    from dataclasses import replace

    changes = {}
    if args.gain_db is not None:
        changes["gain_db"] = args.gain_db
    if args.screen is not None:
        changes["output_screen"] = args.screen
    if args.crossfade is not None:
        changes["crossfade_seconds"] = args.crossfade
    try:
        return replace(settings, **changes)
    except ValueError as error:
        raise UserError(str(error)) from None


def _prepare_display(smoke: bool) -> None:
    """Qt needs a display; a smoke run without one draws offscreen instead."""
    has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform != "linux"
    if has_display or os.environ.get("QT_QPA_PLATFORM"):
        return
    if not smoke:
        raise UserError("there is no display (DISPLAY is not set): run the app in a desktop session, or use "
                        "'tpos-live live' in a terminal")
    os.environ["QT_QPA_PLATFORM"] = "offscreen"


def _start_engine(args: argparse.Namespace, settings):
    """Load the models, open the sound source and start the engine; returns (recipe, engine)."""
    from tpos_live.app.bridge import Reports
    from tpos_live.app.conditioning import conditioning_choices
    from tpos_live.app.main_window import EngineRecipe
    from tpos_live.live.cli import load_live_models

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.crossfade is None:
        args = replace_namespace(args, crossfade=settings.crossfade_seconds)
    live, stack, render_settings, provider = load_live_models(args, say, progress=True)
    reports = Reports()
    recipe = EngineRecipe(stack, provider, render_settings, live, args.init_image, reports,
                          conditioning_choices(args.encoder, stack, args.clap_model), args.concepts)
    source = _first_source(args, settings, recipe, say)
    say(f"sound: {source.description}")
    engine = recipe.build(source, args.prompt, args.negative_prompt)
    engine.start()
    return recipe, engine


def _first_source(args: argparse.Namespace, settings, recipe, say):
    """The command line's source; else the saved device; the test signal (said out loud) when the
    saved or default device cannot be opened."""
    from tpos_live.app.settings import SYNTHETIC_DEVICE
    from tpos_live.live.cli import _make_source

    args = replace_namespace(args, gain_db=settings.gain_db)
    if args.file is not None or args.synthetic or args.device is not None:
        return _make_source(args, recipe.provider.sample_rate, recipe.reports)
    if settings.device == SYNTHETIC_DEVICE:
        return _make_source(replace_namespace(args, synthetic=True), recipe.provider.sample_rate, recipe.reports)
    try:
        return _make_source(replace_namespace(args, device=settings.device), recipe.provider.sample_rate,
                            recipe.reports)
    except UserError as error:
        say(f"warning: {error}; using the test signal (pick a device in the audio panel)")
        return _make_source(replace_namespace(args, synthetic=True), recipe.provider.sample_rate, recipe.reports)


def replace_namespace(args: argparse.Namespace, **changes) -> argparse.Namespace:
    return argparse.Namespace(**(vars(args) | changes))


def _source_factory(args: argparse.Namespace, recipe):
    """``make_source(device, gain_db)`` for the device picker (same capture options as the command line)."""
    from tpos_live.app.settings import SYNTHETIC_DEVICE
    from tpos_live.live.cli import _make_source

    def make_source(device: str | None, gain_db: float):
        picked = replace_namespace(args, device=device, file=None, synthetic=device == SYNTHETIC_DEVICE,
                                   gain_db=gain_db)
        if picked.synthetic:
            picked.device = None
        return _make_source(picked, recipe.provider.sample_rate, recipe.reports)

    return make_source


def _input_names() -> list[str]:
    from tpos_live.audio.capture import list_devices

    return [d.name for d in list_devices() if d.input_channels > 0]


def _smoke(window, seconds: float) -> int:
    """Run the event loop ``seconds``, then print what reached the screen and stop."""
    from PySide6.QtCore import QEventLoop, QTimer

    from tpos_live.app.bridge import EventLoopLag

    latencies: list[float] = []
    lag = EventLoopLag()
    window.bridge.stats.connect(lambda s: latencies.append(s.latency_ms) if s.latency_ms is not None else None)
    window.output.show_on(window.app_settings.output_screen, fullscreen=False)
    started = time.monotonic()
    # A loop of its own, not app.exec()/quit(): quitting the application would leave every later event
    # loop in this process (a test's, say) returning at once.
    loop = QEventLoop()
    QTimer.singleShot(round(seconds * 1000), loop.quit)
    lag.start()
    loop.exec()
    lag.stop()
    elapsed = time.monotonic() - started
    final = window.engine.stats()
    shown, output = window.preview.frames_shown, window.output.frames_shown
    window.shutdown()
    latency = (f"latency {sum(latencies) / len(latencies):.0f} ms (max {max(latencies):.0f} ms)"
               if latencies else "latency - (no fresh frames)")
    print(f"smoke: {elapsed:.1f} s, {shown} frames in the preview ({shown / elapsed:.1f} fps), "
          f"{output} in the output window, engine {final.frames} frames ({final.frames / elapsed:.1f} fps), "
          f"{latency}, {final.dropped_frames} dropped, {final.overflows} overflows, GUI thread busy at most "
          f"{lag.worst_ms:.0f} ms at a time", flush=True)
    if shown == 0 or output == 0:
        print("error: no frames reached the preview and the output window", file=sys.stderr)
        return 1
    return 0
