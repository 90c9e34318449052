"""``tpos-live render``: an audio file to an audio-reactive MP4."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tpos_live.cli import options
from tpos_live.config import RenderSettings
from tpos_live.names import MODES
from tpos_live.preflight import existed, written

EPILOG = """\
examples:
  tpos-live render song.mp3 --prompt "a photo of a beautiful beach with a blue sky" -o beach.mp4
  tpos-live render song.wav --model tiny --prompt "x" -o test.mp4      # no weights needed (random)
  tpos-live render song.wav --mode paper --encoder tpos.safetensors -o paper.mp4

  tpos-live render song.wav --mode paper --init-image a.png --img2img-preset official -o img2img.mp4

modes:
  fast   sd15-lcm, few-step sampler (LCM), one guided step, TAESD decoder, loudness
         envelope on, sliding windows; frames composed from keyframes (one UNet call
         per audio condition, not per frame)
  paper  the official TPoS recipe on plain SD v1.4 (sd14): 50 PLMS steps, guidance 7.5,
         s_e 7, threshold 0.8, delta t<900, momentum 0.3/0.6, full VAE, no envelope,
         official windows; every frame rendered
Options left unset take the mode's (and the model's) defaults."""


def add_command(commands) -> None:
    p = commands.add_parser("render", help="render an audio file to an audio-reactive MP4",
                            description="Render an audio file to an MP4 whose frames follow the sound, "
                                        "with the sound muxed in.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio", type=Path, help="audio file (wav, flac, ogg, mp3, m4a, or a video's audio track)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="MP4", help="the MP4 to write")
    options.add_scene_options(p)
    video = p.add_argument_group("video")
    video.add_argument("--mode", choices=MODES, default="fast", help="fast (default) or paper")
    options.add_frame_options(video, fps_help=f"frames per second (default {RenderSettings.fps:g})")
    video.add_argument("--frames", type=Path, dest="frames_dir", metavar="DIR",
                       help="also write every frame as a PNG here")
    video.add_argument("--overwrite-frames", action="store_true",
                       help="with --frames: replace frame_NNNNNN.png files there that no render recorded "
                            "writing (refused without it)")
    options.add_sampling_options(p)
    options.add_paper_options(p)
    options.add_model_options(p, model_default=None)
    add_resume_and_workers_options(p)
    options.add_quiet_option(p, "no progress bar")
    p.set_defaults(run=run)


def add_resume_and_workers_options(p: argparse.ArgumentParser) -> None:
    """--resume, --workers, --ray-address (docs/distributed.md)."""
    group = p.add_argument_group("resuming and distributing (docs/distributed.md)")
    group.add_argument("--resume", action="store_true",
                       help="keep the frames an earlier run of this render left (in --frames DIR, else in a cache "
                            "beside the output that a render with --resume keeps until it completes) and render "
                            "only the others")
    group.add_argument("--workers", type=int, metavar="N",
                       help="render on N Ray workers (one model each; on GPUs one GPU each): needs the "
                            "[distributed] extra")
    group.add_argument("--ray-address", metavar="ADDR",
                       help="with --workers: join the Ray cluster at ADDR (host:port or 'auto') instead of "
                            "starting a local one of N CPUs")


def run(args: argparse.Namespace) -> int:
    from tpos_live.session import RenderSpec, render

    spec = options.checked(RenderSpec, audio=args.audio, output=args.output, scene=options.scene_spec(args),
                           model=options.model_spec(args), backend=options.backend_spec(args),
                           conditioning=options.conditioning_spec(args), frames_dir=args.frames_dir,
                           resume=args.resume, overwrite_frames=args.overwrite_frames, workers=args.workers,
                           ray_address=args.ray_address)
    say = printer(args.quiet)
    replacing = existed(spec.output)
    report = render(spec, say=say, progress=not args.quiet)
    earlier = report.frames - report.rendered if report.rendered >= 0 else 0
    found = f", {earlier} of them from an earlier run" if earlier else ""
    plural = "s" if report.keyframes != 1 else ""
    made = f" from {report.keyframes} keyframe{plural}" if report.keyframes else ""
    say(f"{written(report.output, replacing)}: {report.frames} frames{made}{found}, {report.unet_calls} UNet calls, "
        f"in {report.seconds:.1f} s ({report.seconds_per_frame:.3f} s/frame)")
    return 0


def printer(quiet: bool):
    """``say(message)`` to stderr; with ``quiet`` only warnings and errors."""
    def say(message: str) -> None:
        if not quiet or message.startswith(("warning", "error")):
            print(message, file=sys.stderr, flush=True)

    return say
