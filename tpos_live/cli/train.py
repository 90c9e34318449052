"""``tpos-live train-encoder`` and ``tpos-live import-tpos``: their flags, and the specs they fill.

Help texts take their defaults from the dataclasses the flags fill (:mod:`tpos_live.training.spec`,
:mod:`tpos_live.training.recipe`); :func:`tpos_live.training.build.train_encoder` builds the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tpos_live.cli import options
from tpos_live.errors import UserError
from tpos_live.limits import BACKBONE_WIDTH_RANGE
from tpos_live.names import MAP_OUTPUTS, SPECTROGRAM_FLOORS, TEXT_TARGETS
from tpos_live.preflight import refuse_output_on_inputs, written
from tpos_live.training.recipe import TrainConfig
from tpos_live.training.spec import (
    AUTO_LAYOUT,
    LAYOUT_CHOICES,
    LAYOUTS,
    MEL_N_FFT,
    TRAIN_FRONT_END,
    VAL_FOLD,
    VAL_FRACTION,
    DataSpec,
    PromptTemplate,
    TrainSpec,
    front_end,
)

TRAIN_EXAMPLES = """\
examples:
  tpos-live train-encoder sounds/ -o runs/mine                  # sounds/<label>/*.wav, for sd15-lcm
  tpos-live train-encoder vggsound.csv --audio-dir clips/ -o runs/vgg --balanced
  tpos-live train-encoder ESC-50/ -o runs/esc --label-prompt "the sound of {label}" --model sd-turbo
  tpos-live train-encoder sounds/ -o runs/mine --resume --epochs 80
  torchrun --nproc-per-node 4 -m tpos_live train-encoder vggsound.csv -o runs/vgg   # 4 GPUs, one model
  tpos-live render song.mp3 --prompt "a beach" --encoder runs/mine/best.safetensors -o out.mp4
"""

IMPORT_EPILOG = """\
example:
  tpos-live import-tpos weights/audio_encoder_23.pth weights/map_model_23.pth -o tpos-official
  tpos-live render song.mp3 --prompt "a beach" --encoder tpos-official.safetensors -o out.mp4

The files are read without running any code in them (tensors only) and checked tensor by tensor
against the official model structure. They are aligned to SD 1.x's text encoder (768-wide)."""


def add_train_command(commands: argparse._SubParsersAction) -> None:
    """Add ``train-encoder`` to the subcommands of the ``tpos-live`` parser."""
    p = commands.add_parser(
        "train-encoder",
        help="train a TPoS audio encoder on labelled sounds",
        description="Train the TPoS audio encoder and MAP on labelled clips, aligned to a Stable Diffusion "
        "model's own text encoder, into the checkpoint format `render --encoder` loads.",
        epilog=_train_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", type=Path, help="a folder of clips, or a data set's CSV (VGGSound, ESC-50)")
    p.add_argument(
        "-o", "--output", type=Path, required=True, help="folder for checkpoints, state and metrics"
    )
    _add_data_options(p.add_argument_group("data"))
    _add_front_end_options(p.add_argument_group("front end (defaults: the official inference map's sizes)"))
    _add_recipe_options(p.add_argument_group("optimisation (defaults: the official recipe)"))
    run = p.add_argument_group("run")
    options.add_model_option(run, purpose="the model whose text encoder gives the targets")
    run.add_argument(
        "--text-target",
        choices=TEXT_TARGETS,
        default=_default(TrainSpec, "text_target"),
        help="InfoNCE target: projected (as the paper: CLIP's joint-space text embedding; SD models take the "
        "projection from their CLIP on the hub) or pooled (the text encoder's pooled output, unprojected) "
        "(default %(default)s)",
    )
    run.add_argument("--init", help="start from this TPoS checkpoint instead of random weights")
    low, high = BACKBONE_WIDTH_RANGE
    run.add_argument("--backbone-width", type=int, default=_default(TrainSpec, "backbone_width"),
                     help=f"the encoder's ResNet-18 width, {low}..{high}: narrower for a small world "
                          f"(default %(default)s, the official encoder's)")
    run.add_argument("--map-output", choices=MAP_OUTPUTS, default=_default(TrainSpec, "map_output"),
                     help="MAP's output: gelu (default, the official: dropout, then GELU, so no token value below "
                          "-0.17) or linear (neither: for a text encoder whose tokens go lower, as the mini world's)")
    run.add_argument("--resume", action="store_true", help="continue the run saved in OUTPUT")
    run.add_argument("--keep-epochs", action="store_true", help="keep every epoch's checkpoint")
    options.add_compute_device_option(run)
    options.add_quiet_option(p, "no progress bars")
    p.add_argument("--no-default", action="store_true",
                   help="do not make the result the default encoder for its text family")
    p.set_defaults(run=run_train)


def _add_data_options(data: argparse._ArgumentGroup) -> None:
    data.add_argument("--layout", default=_default(DataSpec, "layout"), choices=LAYOUT_CHOICES,
                      help="how the data set is laid out (default %(default)s: told by what DATA is; see below)")
    data.add_argument("--audio-dir", type=Path, help="where a CSV's clips are (default: next to it)")
    data.add_argument(
        "--label-prompt",
        default=_default(PromptTemplate, "template"),
        metavar="TEMPLATE",
        help="text made from a label, e.g. 'the sound of {label}' (default: the label)",
    )
    data.add_argument(
        "--val-fraction",
        type=float,
        help="share of each label's clips held out to validate, where the data set fixes no split "
        f"(folders and prefix layouts; default {VAL_FRACTION})",
    )
    data.add_argument("--val-fold", type=int, help=f"ESC-50 fold that validates (default {VAL_FOLD})")
    data.add_argument("--balanced", action="store_true", help="class-balanced batches")
    data.add_argument("--cache", type=Path, help="spectrogram cache folder (default: OUTPUT/cache)")
    data.add_argument(
        "--data-workers",
        type=int,
        default=_default(DataSpec, "workers"),
        help="processes that compute spectrograms and load batches (default %(default)s: this one)",
    )


def _add_front_end_options(front: argparse._ArgumentGroup) -> None:
    add_front_end_option(front, default=TRAIN_FRONT_END.kind)
    sizes = TRAIN_FRONT_END
    front.add_argument("--front-end-rate", type=int, default=sizes.sample_rate,
                       help="audio is resampled to this (%(default)s)")
    front.add_argument("--n-fft", type=int, help=f"FFT size (stft: {sizes.n_fft}, mel: {MEL_N_FFT})")
    front.add_argument("--hop-length", type=int, default=sizes.hop_length,
                       help="samples between frames (%(default)s)")
    front.add_argument("--height", type=int, default=sizes.height,
                       help="rows of a map (mel: the number of bands) (%(default)s)")
    front.add_argument("--segment-frames", type=int, default=sizes.segment_frames,
                       help="columns of a segment map (%(default)s)")
    front.add_argument("--segments", type=int, default=sizes.segments, help="segments N of a window (%(default)s)")
    add_floor_option(front, default=TRAIN_FRONT_END.floor)


def _add_recipe_options(opt: argparse._ArgumentGroup) -> None:
    def recipe_option(flag: str, kind: type, help_text: str) -> None:
        name = flag.removeprefix("--").replace("-", "_")
        opt.add_argument(flag, type=kind, default=_default(TrainConfig, name), help=help_text)

    recipe_option("--epochs", int, "passes over the training clips (%(default)s)")
    recipe_option("--batch-size", int, "clips per step, over all processes (%(default)s)")
    recipe_option("--lr", float, "encoder SGD learning rate at the start of a cycle (%(default)s)")
    recipe_option("--max-lr", float, "learning rate at the peak of a cycle (%(default)s)")
    recipe_option("--cycle-epochs", int, "epochs from --lr up to --max-lr (%(default)s)")
    recipe_option("--map-lr", float, "MAP Adam learning rate (%(default)s)")
    recipe_option("--grad-clip", float, "clip the gradient norm to this (default: no clipping)")
    recipe_option("--max-steps", int, "stop after this many steps in all")
    options.add_seed_option(opt, "weights, batches, crops, masks and dropout", default=TrainConfig.seed)
    opt.add_argument("--no-amp", action="store_true", help="full precision on a GPU too")


def _train_epilog() -> str:
    recipe = TrainConfig()
    layouts = ", ".join(f"{name} ({looks})" for name, looks in LAYOUTS.items())
    notes = (
        f"layouts (--layout {AUTO_LAYOUT} picks one): {layouts}. "
        f"Defaults are the official TPoS recipe: SGD {recipe.lr:g} cycling to {recipe.max_lr:g} over "
        f"{recipe.cycle_epochs} epochs, MAP Adam {recipe.map_lr:g}, batch {recipe.batch_size}, {recipe.epochs} "
        "epochs; InfoNCE against CLIP's projected text embeddings; maps in dB re each segment's maximum. "
        "Under torchrun the processes share every batch of --batch-size clips (a multiple of their number). "
        "Writes last/best checkpoints, training-state.pt and metrics.jsonl."
    )
    return TRAIN_EXAMPLES + "\n" + textwrap.fill(notes, width=104)


def _default(config: type, name: str) -> Any:
    """The default of the dataclass ``config``'s field ``name``: flags take their defaults from the
    dataclasses they fill, so that each is written once."""
    field = next(field for field in dataclasses.fields(config) if field.name == name)
    return field.default


def add_front_end_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str) -> None:
    """``--front-end``, shared by ``train-encoder`` and ``import-tpos``."""
    parser.add_argument(
        "--front-end",
        choices=("stft", "mel"),
        default=default,
        help="map fed to the encoder: stft (the linear STFT map the official inference uses) or mel (what "
        f"the official encoder was trained on: {TRAIN_FRONT_END.n_mels} bands, n_fft {MEL_N_FFT}) "
        "(default %(default)s)",
    )


def add_floor_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str) -> None:
    """``--spectrogram-floor``, shared by ``train-encoder`` and ``import-tpos``: recorded in the checkpoint,
    so that render and live make the maps the encoder was trained on."""
    parser.add_argument(
        "--spectrogram-floor",
        choices=SPECTROGRAM_FLOORS,
        default=default,
        help=f"dB reference of the maps (default {default}): official (the official inference map: dB re "
        "1.0, floored 80 dB below the file's peak with the official windows, below each segment's peak in "
        "live and sliding windows), relative (floored 80 dB below each segment's maximum, so the level does "
        "not matter) or absolute (dB re 1.0 floored at -80 dB; the maps of encoders made before this option)",
    )


def add_import_command(commands: argparse._SubParsersAction) -> None:
    """Add ``import-tpos`` to the subcommands of the ``tpos-live`` parser."""
    p = commands.add_parser(
        "import-tpos",
        help="convert the official TPoS weights to a tpos-live encoder",
        description="Convert the official TPoS audio encoder and MAP (audio_encoder_23.pth, "
        "map_model_23.pth) "
        "into a checkpoint that `render --encoder` loads.",
        epilog=IMPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("encoder", type=Path, help="the official audio encoder (audio_encoder_23.pth)")
    p.add_argument("map", type=Path, help="the official MAP (map_model_23.pth)")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="checkpoint to write: OUTPUT.safetensors and OUTPUT.json",
    )
    add_front_end_option(p, default="stft")
    add_floor_option(p, default="official")
    p.add_argument(
        "--text-family",
        help="the text encoder the weights were aligned to (default: the official one, SD 1.4's CLIP ViT-L/14)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing checkpoint")
    p.add_argument("--no-default", action="store_true",
                   help="do not make the result the default encoder for its text family")
    p.set_defaults(run=run_import)


# --- run functions ------------------------------------------------------------------------------------


def run_import(args: argparse.Namespace) -> int:
    from tpos_live.conditioning.official import import_official
    from tpos_live.training.build import make_default_encoder

    replacing = _check_import_paths(args)
    given_family = {} if args.text_family is None else {"text_family": args.text_family}
    weights, config = import_official(
        args.encoder, args.map, args.output, spectrogram=front_end(args.front_end, args.spectrogram_floor),
        **given_family,
    )
    print(f"{written(weights, replacing)} and {config}", file=sys.stderr)
    make_default_encoder(weights, skip=args.no_default, say=lambda message: print(message, file=sys.stderr))
    return 0


def run_train(args: argparse.Namespace) -> int:
    from tpos_live.training.build import train_encoder

    spec = train_spec(args)
    train_encoder(spec, _printer(spec.quiet))
    return 0


def train_spec(args: argparse.Namespace) -> TrainSpec:
    """The run ``train-encoder``'s flags describe. Raises UserError for a value a spec refuses."""
    return options.checked(_train_spec, args)


def _train_spec(args: argparse.Namespace) -> TrainSpec:
    spectrogram = front_end(
        args.front_end,
        args.spectrogram_floor,
        sample_rate=args.front_end_rate,
        n_fft=args.n_fft,
        hop_length=args.hop_length,
        height=args.height,
        segment_frames=args.segment_frames,
        segments=args.segments,
    )
    return TrainSpec(
        data=_data_spec(args),
        output=args.output,
        model=args.model,
        spectrogram=spectrogram,
        backbone_width=args.backbone_width,
        map_output=args.map_output,
        recipe=_recipe(args),
        text_target=args.text_target,
        init=args.init,
        resume=args.resume,
        keep_epochs=args.keep_epochs,
        compute_device=args.compute_device,
        quiet=args.quiet,
        make_default=not args.no_default,
    )


def _recipe(args: argparse.Namespace) -> TrainConfig:
    flags = ("epochs", "batch_size", "lr", "max_lr", "cycle_epochs", "map_lr", "seed", "max_steps", "grad_clip")
    given = {name: getattr(args, name) for name in flags if getattr(args, name) is not None}
    return TrainConfig(**given, balanced=args.balanced, amp=not args.no_amp)


def _data_spec(args: argparse.Namespace) -> DataSpec:
    return DataSpec(
        source=args.data,
        layout=args.layout,
        audio_dir=args.audio_dir,
        prompt=PromptTemplate(args.label_prompt),
        val_fraction=args.val_fraction,
        val_fold=args.val_fold,
        cache=args.cache,
        workers=args.data_workers,
    )


def _check_import_paths(args: argparse.Namespace) -> bool:
    """The two official files are two files, the checkpoint can be written and lands on neither of them,
    and an existing one is replaced only with --force. Returns whether one is replaced."""
    from tpos_live.conditioning.checkpoint import checkpoint_paths
    from tpos_live.video.writer import check_output_path

    inputs = [("official audio encoder", args.encoder), ("official MAP", args.map)]
    if args.encoder.is_file() and args.map.is_file() and os.path.samefile(args.encoder, args.map):
        raise UserError(f"the encoder and the MAP are the same file '{args.map}': give audio_encoder_23.pth, then "
                        "map_model_23.pth")
    existing = []
    for path in checkpoint_paths(args.output):
        check_output_path(path, example="tpos-official")
        refuse_output_on_inputs(path, "-o", inputs)
        existing += [path] if path.exists() else []
    if existing and not args.force:
        raise UserError(f"'{existing[0]}' exists: choose another --output or pass --force to overwrite it")
    return bool(existing)


def _printer(quiet: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if not quiet or message.startswith(("warning", "error")):
            print(message, file=sys.stderr, flush=True)

    return say
