"""The `tpos-live` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tpos_live import __version__
from tpos_live.app.cli import add_app_command
from tpos_live.errors import UserError
from tpos_live.live.cli import add_devices_command, add_live_command
from tpos_live.training.cli import add_import_command, add_train_command

BACKEND_NAMES = ("torch", "torch-compiled", "torch-bf16", "onnxruntime", "tensorrt")

DESCRIPTION = """\
tpos-live: audio-reactive visuals with Stable Diffusion, after The Power of Sound (TPoS).
The sound's meaning (through a learned audio encoder) and its loudness steer every frame."""

RENDER_EPILOG = """\
examples:
  tpos-live render song.mp3 --prompt "a photo of a beautiful beach with a blue sky" -o beach.mp4
  tpos-live render song.wav --model tiny --prompt "x" -o test.mp4      # no weights needed (random)
  tpos-live render song.wav --mode paper --encoder tpos.safetensors -o paper.mp4

modes:
  fast   few-step sampler (LCM), one guided step, TAESD decoder, loudness envelope on
  paper  the official TPoS recipe: 50 PLMS steps, guidance 7.5, s_e 7, threshold 0.8,
         delta t<900, momentum 0.3/0.6, full VAE, no envelope
Options left unset take the mode's (and the model's) defaults."""


def main(argv: list[str] | None = None) -> int:
    # transformers announces missing optional image backends on import; users need none of them.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was written", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tpos-live", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tpos-live {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_render_command(commands)
    add_devices_command(commands)
    add_live_command(commands)
    add_train_command(commands)
    add_import_command(commands)
    add_app_command(commands)
    return parser


def add_render_command(commands) -> None:
    p = commands.add_parser("render", help="render an audio file to an audio-reactive MP4",
                            description="Render an audio file to an MP4 whose frames follow the sound, "
                                        "with the sound muxed in.",
                            epilog=RENDER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio", type=Path, help="audio file (wav, flac, ogg, mp3, m4a, or a video's audio track)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="MP4", help="the MP4 to write")
    scene = p.add_argument_group("scene")
    scene.add_argument("--prompt", required=True, metavar="TEXT", help="what the video shows")
    scene.add_argument("--negative-prompt", default="", metavar="TEXT", help="what it should not show")
    scene.add_argument("--seed", type=int, metavar="N",
                       help="noise seed: the same seed gives the same video (default 42)")
    scene.add_argument("--init-image", type=Path, metavar="IMAGE",
                       help="start from this image instead of the prompt alone")
    video = p.add_argument_group("video")
    video.add_argument("--mode", choices=("fast", "paper"), default="fast", help="fast (default) or paper")
    video.add_argument("--size", type=parse_size, metavar="WxH", help="frame size (default 512x512)")
    video.add_argument("--fps", type=float, help="frames per second (default 24)")
    video.add_argument("--frames", type=Path, metavar="DIR", help="also write every frame as a PNG here")
    video.add_argument("--batch", type=int, dest="batch_frames", metavar="N",
                       help="frames rendered per batch (default 1)")
    sampling = p.add_argument_group("sampling and guidance")
    sampling.add_argument("--steps", type=int, metavar="N", help="denoising steps (fast: the model's, paper: 50)")
    sampling.add_argument("--sampler", choices=("lcm", "ddim", "plms"), help="fast: lcm, paper: plms")
    sampling.add_argument("--guidance", type=float, dest="text_guidance", metavar="G",
                          help="text guidance scale g (fast: the model's, 1 for LCM; paper: 7.5)")
    sampling.add_argument("--audio-guidance", type=float, metavar="GS", help="audio guidance scale g_s (default 7)")
    sampling.add_argument("--threshold", type=float, metavar="Q", help="guidance quantile threshold q in [0, 1) (0.8)")
    sampling.add_argument("--momentum", type=float, dest="momentum_scale", metavar="M", help="momentum scale (0.3)")
    sampling.add_argument("--momentum-beta", type=float, metavar="B", help="momentum beta (0.6)")
    delta = sampling.add_mutually_exclusive_group()
    delta.add_argument("--delta", type=int, dest="delta_timestep", metavar="T",
                       help="audio guidance on steps with DDPM timestep t < T, like the official param_t "
                            "(paper: 900)")
    delta.add_argument("--delta-step", type=int, metavar="I",
                       help="audio guidance from step index I on (fast: the last step)")
    sampling.add_argument("--envelope", type=float, dest="envelope_depth", metavar="DEPTH",
                          help="how much loudness scales g_s, 0..1 (fast 0.75, paper 0 = off)")
    sampling.add_argument("--attack", type=float, dest="attack_seconds", metavar="S", help="envelope attack, s (0.01)")
    sampling.add_argument("--release", type=float, dest="release_seconds", metavar="S",
                          help="envelope release, s (0.25)")
    models = p.add_argument_group("models")
    models.add_argument("--model", default="sd15-lcm",
                        help="sd15-lcm (default), sd-turbo, tiny (random weights, for trying), a diffusers "
                             "folder, a .safetensors checkpoint, or a Hugging Face repo id")
    models.add_argument("--lora", help="a LoRA to fuse (folder, .safetensors or repo id)")
    models.add_argument("--lora-scale", type=float, default=1.0, metavar="S", help="LoRA strength (1.0)")
    models.add_argument("--taesd", help="TAESD decoder (folder or repo id), or 'none'")
    models.add_argument("--decoder", choices=("taesd", "vae"), help="fast: taesd, paper: vae")
    models.add_argument("--encoder", help="audio conditioning: a TPoS checkpoint (.safetensors with its .json), "
                                          "'random' (untrained TPoS), or 'clap' / 'clap:FOLDER|REPO_ID' (zero-shot "
                                          "concept bank, default laion/clap-htsat-unfused). Default: the TPoS "
                                          "encoder set by import/training, else the CLAP bank")
    models.add_argument("--concepts", type=Path, metavar="TOML",
                        help="concept bank TOML for CLAP conditioning (default: the bundled bank of 14 concepts)")
    models.add_argument("--backend", default="torch", choices=BACKEND_NAMES,
                        help="what runs the UNet and decoder: torch (default), torch-compiled, torch-bf16 "
                             "(CPU AMX), onnxruntime, tensorrt (CUDA GPU)")
    models.add_argument("--allow-fallback", action="store_true",
                        help="if the backend cannot run here, use torch instead (with a warning)")
    models.add_argument("--engines", type=Path, metavar="DIR", help="ONNX/TensorRT artefacts (default engines/)")
    models.add_argument("--static-shapes", action="store_true",
                        help="TensorRT: one batch size, run as CUDA graphs")
    models.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    models.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="network precision (auto: float16 on CUDA, float32 on CPU)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_render)


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x512, got {text!r}") from None
    return width, height


def run_render(args: argparse.Namespace) -> int:
    from tpos_live.diffusion.loading import ModelSpec
    from tpos_live.offline import RenderJob, render_file
    from tpos_live.runtime import resolve_device

    device, dtype = resolve_device(args.device, args.dtype)
    model = ModelSpec(model=args.model, lora=args.lora, lora_scale=args.lora_scale, taesd=args.taesd,
                      device=device, dtype=dtype)
    settings = settings_from_args(args, model)
    job = RenderJob(audio=args.audio, output=args.output, prompt=args.prompt, settings=settings, model=model,
                    encoder=args.encoder, concepts=args.concepts, negative_prompt=args.negative_prompt,
                    init_image=args.init_image, frames_dir=args.frames, backend=args.backend,
                    allow_fallback=args.allow_fallback, engines=args.engines, static_shapes=args.static_shapes)
    say = _stderr_printer(args.quiet)
    report = render_file(job, say=say, progress=not args.quiet)
    say(f"wrote {report.output}: {report.frames} frames in {report.seconds:.1f} s "
        f"({report.seconds_per_frame:.3f} s/frame)")
    return 0


def settings_from_args(args: argparse.Namespace, model):
    from tpos_live.config import RenderSettings

    width, height = args.size if args.size else (None, None)
    overrides = {name: getattr(args, name) for name in (
        "seed", "fps", "steps", "sampler", "text_guidance", "audio_guidance", "threshold", "momentum_scale",
        "momentum_beta", "delta_timestep", "delta_step", "envelope_depth", "attack_seconds", "release_seconds",
        "decoder", "batch_frames")}
    overrides.update(width=width, height=height)
    if args.mode == "fast":
        defaults = model_fast_defaults(model)
        for name, value in defaults.items():
            if overrides.get(name) is None:
                overrides[name] = value
    try:
        return RenderSettings.for_mode(args.mode, **overrides)
    except ValueError as error:
        raise UserError(f"{error}") from None


def model_fast_defaults(model) -> dict:
    """Fast-mode steps and text guidance that suit the chosen model (sd-turbo wants g = 0)."""
    from tpos_live.diffusion.loading import fast_defaults

    return fast_defaults(model.model)


def _stderr_printer(quiet: bool):
    def say(message: str) -> None:
        if not quiet or message.startswith(("warning", "error")):
            print(message, file=sys.stderr, flush=True)

    return say


if __name__ == "__main__":
    raise SystemExit(main())
