"""Reproduce the paper's Table 2 (IS, FVD, CLIP a<->v, CLIP t<->v) for fast and paper mode.

    python scripts/reproduce_table2.py AUDIO_DIR [--reference-videos DIR] [--model M] [--out DIR]
    python scripts/reproduce_table2.py examples --model tiny --size 64x64     # end to end, no downloads

Every audio file under AUDIO_DIR is rendered at 20 fps (as the paper) in each mode with a prompt that
does not show the sound's style (as the paper does; ``--prompt``), through the project's composition root
(``tpos_live.session.render``). The clips are then scored by ``tpos_live.evaluation`` and the table is
printed beside the paper's TPoS row. Class labels (for CLIP t<->v's "The photo of <class>", as the paper)
come from each file's folder (Landscape's layout: AUDIO_DIR/<class>/<clip>.wav), else from the file name.

With ``--model tiny`` the stack, the metric networks and the TPoS encoder all have RANDOM weights: the
numbers then only show that the pipeline runs, and mean nothing. Real figures need the paper's SD model
and TPoS encoder, ViT-L/14 CLIP, the IS classifier and VideoMAE (docs/evaluation.md), and the
Landscape test set's real videos for FVD. Our IS and FVD networks differ from the paper's (InceptionNet
and a Landscape-fine-tuned I3D), so even then only the CLIP columns are directly comparable.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from tpos_live.cli.options import add_compute_device_option, add_encoder_option, add_quiet_option, parse_size
from tpos_live.cli.render import printer
from tpos_live.errors import UserError

PAPER_ROW = {"is": 1.49, "is_std": 0.38, "fvd": 421.23, "clip-audio": 0.1964, "clip-text": 0.2436}
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a")
NEUTRAL_PROMPT = "a photo of a quiet landscape"
PAPER_FPS = 20.0


def audio_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise UserError(f"'{folder}' holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return files


def class_label(path: Path, root: Path) -> str:
    """The clip's class: its folder under ``root`` (Landscape's layout), else its name without digits."""
    name = path.parent.name if path.parent != root else re.sub(r"[\d_\-]+$", "", path.stem) or path.stem
    return name.replace("_", " ").strip()


def render_all(args, files: list[Path], mode: str, model: str, say) -> list[Path]:
    from tpos_live.session import ConditioningSpec, ModelSpec, RenderSpec, SceneSpec, render

    out = args.out / mode
    out.mkdir(parents=True, exist_ok=True)
    overrides = {"fps": PAPER_FPS, "width": args.size[0], "height": args.size[1]}
    scene = SceneSpec(args.prompt, mode=mode, overrides=overrides)
    videos = []
    for number, audio in enumerate(files):
        video = out / f"{number:04d}-{audio.stem}.mp4"
        if not video.exists() or args.rerender:
            spec = RenderSpec(audio=audio, output=video, scene=scene,
                              model=ModelSpec(model=model, device=args.compute_device),
                              conditioning=ConditioningSpec(args.render_encoder))
            render(spec, say=say, progress=not args.quiet)
        videos.append(video)
    return videos


def evaluate_mode(args, videos: list[Path], labels: list[str], networks: dict[str, str], say) -> dict[str, float]:
    from tpos_live.evaluation.evaluate import EvaluationSpec, evaluate, format_table

    metrics = ["reactivity", "flicker", "clip-text", "clip-audio", "is"] + (["fvd"] if args.reference_videos else [])
    spec = EvaluationSpec(videos=tuple(videos), metrics=tuple(metrics), prompts=tuple(f"The photo of {c}"
                                                                                         for c in labels),
                          reference_videos=args.reference_videos, device=args.compute_device, **networks)
    report = evaluate(spec, say=say, progress=not args.quiet)
    say(format_table(report))
    return report.pooled


def table(rows: dict[str, dict[str, float]]) -> str:
    def cell(row, key, digits):
        return f"{row[key]:.{digits}f}" if key in row else "n/a"

    lines = ["| Model | IS ↑ | FVD ↓ | CLIP ↑ (a↔v) | CLIP ↑ (t↔v) | reactivity ↑ | flicker ↓ |",
             "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        is_cell = f"{row['is']:.2f} ± {row['is_std']:.2f}" if "is" in row else "n/a"
        lines.append(f"| {name} | {is_cell} | {cell(row, 'fvd', 2)} | {cell(row, 'clip-audio', 4)} | "
                     f"{cell(row, 'clip-text', 4)} | {cell(row, 'reactivity', 3)} | {cell(row, 'flicker', 3)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    # As tpos-live's main: transformers announces optional image backends nobody here uses.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio_dir", type=Path, metavar="AUDIO_DIR")
    parser.add_argument("--reference-videos", type=Path, metavar="DIR", help="real videos for FVD (else n/a)")
    parser.add_argument("--model", help="the diffusion model of both modes (tiny: random weights)")
    parser.add_argument("--fast-model", help="fast mode's model (default --model, else sd15-lcm)")
    parser.add_argument("--paper-model", help="paper mode's model (default --model, else the paper mode default)")
    parser.add_argument("--modes", nargs="+", default=["fast", "paper"], choices=("fast", "paper"))
    parser.add_argument("--prompt", default=NEUTRAL_PROMPT, help=f"the render prompt ({NEUTRAL_PROMPT!r})")
    parser.add_argument("--size", type=parse_size, default=(512, 512), metavar="WxH", help="frame size (512x512)")
    parser.add_argument("--out", type=Path, default=Path("table2-renders"), help="where the clips go")
    parser.add_argument("--rerender", action="store_true", help="render clips that already exist again")
    parser.add_argument("--render-encoder", help="the renders' audio conditioning (render's --encoder)")
    for flag in ("--clip-model", "--is-model", "--fvd-model"):
        parser.add_argument(flag, help="the metric network (default: docs/evaluation.md; tiny with --model tiny)")
    add_encoder_option(parser, "clip-audio's TPoS checkpoint (default: the one set; random with --model tiny)")
    add_compute_device_option(parser)
    add_quiet_option(parser, "no progress bars")
    args = parser.parse_args(argv)
    say = printer(args.quiet)
    try:
        return run(args, say)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


def run(args, say) -> int:
    from tpos_live.diffusion.models import ModelSpec

    files = audio_files(args.audio_dir)
    labels = [class_label(path, args.audio_dir) for path in files]
    models = {"fast": args.fast_model or args.model or ModelSpec().model,
              "paper": args.paper_model or args.model or ModelSpec().model}
    tiny = all(models[mode] == "tiny" for mode in args.modes)
    networks = {"clip_model": args.clip_model, "is_model": args.is_model, "fvd_model": args.fvd_model,
                "encoder": args.encoder}
    if tiny:
        say("the tiny stack: metric networks default to tiny and the TPoS encoder to random (RANDOM weights)")
        networks = {key: value or ("random" if key == "encoder" else "tiny") for key, value in networks.items()}
    networks = {key: value for key, value in networks.items() if value is not None}
    rows = {"TPoS (paper, Landscape)": PAPER_ROW}
    for mode in args.modes:
        say(f"== {mode} mode ({models[mode]}): {len(files)} clips at {PAPER_FPS:g} fps")
        videos = render_all(args, files, mode, models[mode], say)
        rows[f"tpos-live {mode} ({models[mode]})"] = evaluate_mode(args, videos, labels, networks, say)
    print(table(rows))
    if tiny:
        print("NOTE: random weights everywhere (tiny stack, tiny networks, untrained encoder): these numbers "
              "only show that the pipeline runs; they mean nothing.")
    elif not args.reference_videos:
        print("FVD: n/a (give --reference-videos DIR, e.g. the Landscape test set's videos)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
