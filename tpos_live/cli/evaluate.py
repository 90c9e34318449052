"""``tpos-live evaluate``: score videos (does it follow the sound, does it flicker, the paper's metrics)."""

from __future__ import annotations

import argparse
from pathlib import Path

from tpos_live.cli import options
from tpos_live.cli.render import printer
from tpos_live.errors import UserError
from tpos_live.names import ALL_METRICS, DEFAULT_METRICS, METRICS, OBJECT_LAG_SECONDS
from tpos_live.preflight import existed, model_inputs, refuse_output_on_inputs, written

# The flags only some metrics read (EvaluationSpec field: flag, those metrics); left out, the spec's default.
METRIC_FLAGS = {
    "prompt": ("--prompt", ("clip-text",)),
    "audio": ("--audio", ("reactivity", "clip-audio")),
    "reference_videos": ("--reference-videos", ("fvd",)),
    "clip_model": ("--clip-model", ("clip-text", "clip-audio")),
    "is_model": ("--is-model", ("is",)),
    "fvd_model": ("--fvd-model", ("fvd",)),
    "encoder": ("--encoder", ("clip-audio",)),
    "sample_fps": ("--sample-fps", ("clip-text", "clip-audio", "is")),
    "max_lag_seconds": ("--max-lag", ("reactivity",)),
    "objects": ("--objects", ("object-accuracy",)),
    "scene": ("--scene", ("object-accuracy",)),
    "object_lag_seconds": ("--object-lag", ("object-accuracy",)),
}

EPILOG = """\
metrics (docs/evaluation.md defines each):
  reactivity  correlation of frame-to-frame change with the sound's loudness and onsets, at the
              best lag within +-0.5 s (also sync_lag_ms: positive = the picture is late)
  flicker     share of the frame-to-frame change undone by the next frame (0 smooth .. 1 flashing)
  clip-text   CLIP ViT-L/14 cosine of frames and --prompt (the paper's CLIP t<->v)
  clip-audio  cosine of frames (CLIP ViT-L/14) and the TPoS encoder's audio embedding (CLIP a<->v)
  is          Inception Score of the frames (ViT-B/16 ImageNet classifier; mean +- std of 10 splits)
  fvd         Frechet distance of VideoMAE clip features to --reference-videos (content-debiased FVD)
  object-accuracy
              renders of the mini world's sounds: share of frames whose object (a deterministic detector)
              is the one --objects says the sound holds, from --object-lag after each change; with
              --scene, also scene_accuracy (not part of 'all')

examples:
  tpos-live evaluate out.mp4                                   # reactivity and flicker
  tpos-live evaluate a.mp4 b.mp4 --metrics all --prompt "a beach" --reference-videos real/ --json s.json
  tpos-live evaluate silent.mp4 --audio song.wav --metrics reactivity
  tpos-live evaluate story.mp4 --metrics object-accuracy --objects examples/story.json --scene night"""


def add_command(commands) -> None:
    p = commands.add_parser("evaluate", help="score videos: reactivity, flicker, CLIP, IS, FVD",
                            description="Score videos: how they follow their sound, how much they flicker, and "
                                        "the paper's Table 2 metrics. Prints a table, one row per video.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", type=Path, nargs="+", metavar="VIDEO", help="the videos to score")
    p.add_argument("--audio", type=Path, metavar="FILE", help="the sound they should follow (default: each "
                                                              "video's own track)")
    options.add_prompt_option(p, "what the frames should show (clip-text)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), metavar="LIST",
                   help=f"comma-separated, or 'all': {', '.join(METRICS)} (default {','.join(DEFAULT_METRICS)})")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the scores and details as JSON")
    p.add_argument("--reference-videos", type=Path, metavar="DIR", help="real videos, fvd's reference set")
    p.add_argument("--sample-fps", type=float, metavar="F",
                   help="frames per second the image networks see (clip-text, clip-audio, is; default 2)")
    p.add_argument("--max-lag", type=float, dest="max_lag_seconds", metavar="S",
                   help="reactivity's lag window, +-S (0.5)")
    mini = p.add_argument_group("the mini world (object-accuracy)")
    mini.add_argument("--objects", type=Path, metavar="FILE",
                      help="the story's timeline: which object each stretch of the sound holds (examples/story.json)")
    # no choices here: the world's tables load numpy and PIL, which --help must not wait for; the spec checks it
    mini.add_argument("--scene", help="the mini world's scene the prompt asked for (e.g. night): also score it")
    mini.add_argument("--object-lag", type=float, dest="object_lag_seconds", metavar="S",
                      help="count frames from S seconds after each change of object "
                           f"(default {OBJECT_LAG_SECONDS:g}: two encoder segments)")
    networks = p.add_argument_group("networks ('tiny': random weights, for trying)")
    networks.add_argument("--clip-model", metavar="NAME",
                          help="CLIP for clip-text and clip-audio: folder or hub id (openai/clip-vit-large-patch14)")
    networks.add_argument("--is-model", metavar="NAME",
                          help="ImageNet classifier for is (google/vit-base-patch16-224)")
    networks.add_argument("--fvd-model", metavar="NAME",
                          help="VideoMAE for fvd (MCG-NJU/videomae-base)")
    options.add_encoder_option(networks, "clip-audio's TPoS checkpoint (.safetensors with its .json) aligned to "
                                         "CLIP ViT-L/14, or 'random' (untrained). Default: the one set by "
                                         "import-tpos/train-encoder")
    options.add_compute_device_option(networks)
    options.add_quiet_option(p, "no progress bars")
    p.set_defaults(run=run)


def parse_metrics(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    return ALL_METRICS if names == ("all",) else names


def run(args: argparse.Namespace) -> int:
    from tpos_live.evaluation.evaluate import EvaluationSpec, evaluate, format_table, write_json

    metrics = parse_metrics(args.metrics)
    given = {name: getattr(args, name) for name in METRIC_FLAGS if getattr(args, name) is not None}
    spec = options.checked(EvaluationSpec, videos=tuple(args.videos), metrics=metrics, device=args.compute_device,
                           **given)
    refuse_unused_flags(given, metrics)
    if args.json is not None:
        check_json_output(args.json, spec)
    replacing = existed(args.json)
    say = printer(args.quiet)
    report = evaluate(spec, say=say, progress=not args.quiet)
    print(format_table(report))
    if args.json is not None:
        say(written(write_json(report, args.json), replacing))
    return 0


def refuse_unused_flags(given: dict, metrics: tuple[str, ...]) -> None:
    """UserError for a flag that none of ``metrics`` reads (it would do nothing)."""
    for name in given:
        flag, readers = METRIC_FLAGS[name]
        if not set(readers) & set(metrics):
            raise UserError(f"{flag} is read by {' and '.join(readers)} alone, which --metrics leaves out: add "
                            f"{' or '.join(readers)} to --metrics, or leave {flag} out")


def check_json_output(path: Path, spec) -> None:
    """--json can be written, and is none of the files the evaluation reads."""
    from tpos_live.video.writer import check_output_path

    check_output_path(path, example="scores.json")
    inputs = [*(("video", video) for video in spec.videos), ("sound file", spec.audio),
              ("reference videos folder", spec.reference_videos), ("timeline", spec.objects),
              *model_inputs(encoder=spec.encoder),
              *(("network", name) for name in (spec.clip_model, spec.is_model, spec.fvd_model))]
    refuse_output_on_inputs(path, "--json", inputs)

