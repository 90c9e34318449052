"""``tpos-live train-encoder`` and ``tpos-live import-tpos``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tpos_live.cli import options
from tpos_live.errors import UserError
from tpos_live.names import SPECTROGRAM_FLOORS, TEXT_TARGETS
from tpos_live.preflight import (
    check_conditioning,
    check_output_folder,
    model_inputs,
    refuse_output_on_inputs,
    written,
)

if TYPE_CHECKING:
    from tpos_live.training.distributed import Processes

TRAIN_EPILOG = """\
examples:
  tpos-live train-encoder sounds/ -o runs/mine                  # sounds/<label>/*.wav, for sd15-lcm
  tpos-live train-encoder vggsound.csv --audio-dir clips/ -o runs/vgg --balanced
  tpos-live train-encoder ESC-50/ -o runs/esc --label-prompt "the sound of {label}" --model sd-turbo
  tpos-live train-encoder sounds/ -o runs/mine --resume --epochs 80
  torchrun --nproc-per-node 4 -m tpos_live train-encoder vggsound.csv -o runs/vgg   # 4 GPUs, one model
  tpos-live render song.mp3 --prompt "a beach" --encoder runs/mine/best.safetensors -o out.mp4

layouts (--layout auto picks one): folders (<label>/<clip>), vggsound (its CSV; test rows validate),
esc50 (meta/esc50.csv + audio/; --val-fold validates), prefix (Landscape: <label>_<name>.wav).
Defaults are the official TPoS recipe: SGD 1e-3 cycling to 0.1 over 5 epochs, MAP Adam 1e-3,
batch 150, 50 epochs; InfoNCE against CLIP's projected text embeddings; maps in dB re each segment's
maximum. Under torchrun the processes share every batch of --batch-size clips (a multiple of their number).
Writes last/best checkpoints, training-state.pt and metrics.jsonl."""

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
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", type=Path, help="a folder of clips, or a data set's CSV (VGGSound, ESC-50)")
    p.add_argument(
        "-o", "--output", type=Path, required=True, help="folder for checkpoints, state and metrics"
    )
    data = p.add_argument_group("data")
    data.add_argument("--layout", default="auto", choices=("auto", "folders", "vggsound", "esc50", "prefix"))
    data.add_argument("--audio-dir", type=Path, help="where a CSV's clips are (default: next to it)")
    data.add_argument(
        "--label-prompt",
        default="{label}",
        metavar="TEMPLATE",
        help="text made from a label, e.g. 'the sound of {label}' (default: the label)",
    )
    data.add_argument(
        "--val-fraction",
        type=float,
        help="share of each label's clips held out to validate, where the data set fixes no split "
        "(folders and prefix layouts; default 0.1)",
    )
    data.add_argument("--val-fold", type=int, help="ESC-50 fold that validates (default 5)")
    data.add_argument("--balanced", action="store_true", help="class-balanced batches")
    data.add_argument("--cache", type=Path, help="spectrogram cache folder (default: OUTPUT/cache)")
    data.add_argument(
        "--data-workers",
        type=int,
        default=0,
        help="processes that compute spectrograms and load batches (default 0: this one)",
    )
    front = p.add_argument_group("front end (defaults: the official inference map's sizes, relative floor)")
    add_front_end_option(front)
    front.add_argument("--front-end-rate", type=int, default=44100, help="audio is resampled to this (44100)")
    front.add_argument("--n-fft", type=int, help="FFT size (stft: 1024, mel: 2048)")
    front.add_argument("--hop-length", type=int, default=512, help="samples between frames (512)")
    front.add_argument(
        "--height", type=int, default=128, help="rows of a map (mel: the number of bands) (128)"
    )
    front.add_argument("--segment-frames", type=int, default=153, help="columns of a segment map (153)")
    front.add_argument("--segments", type=int, default=5, help="segments N of a window (5)")
    add_floor_option(front, default="relative")
    # Defaults of None take TrainConfig's (the official recipe), so that they are written in one place.
    opt = p.add_argument_group("optimisation (defaults: the official recipe)")
    opt.add_argument("--epochs", type=int, help="passes over the training clips (50)")
    opt.add_argument("--batch-size", type=int, help="clips per step, over all processes (150)")
    opt.add_argument("--lr", type=float, help="encoder SGD learning rate at the start of a cycle (1e-3)")
    opt.add_argument("--max-lr", type=float, help="learning rate at the peak of a cycle (0.1)")
    opt.add_argument("--cycle-epochs", type=int, help="epochs from --lr up to --max-lr (5)")
    opt.add_argument("--map-lr", type=float, help="MAP Adam learning rate (1e-3)")
    opt.add_argument("--grad-clip", type=float, help="clip the gradient norm to this (default: no clipping)")
    opt.add_argument("--max-steps", type=int, help="stop after this many steps in all")
    options.add_seed_option(opt, "weights, batches, crops, masks and dropout")
    opt.add_argument("--no-amp", action="store_true", help="full precision on a GPU too")
    run = p.add_argument_group("run")
    options.add_model_option(run, purpose="the model whose text encoder gives the targets")
    run.add_argument(
        "--text-target",
        choices=TEXT_TARGETS,
        default="projected",
        help="InfoNCE target: projected (default, as the paper: CLIP's joint-space text embedding; SD "
        "models take the projection from their CLIP on the hub) or pooled (the text encoder's pooled "
        "output, unprojected)",
    )
    run.add_argument("--init", help="start from this TPoS checkpoint instead of random weights")
    run.add_argument("--resume", action="store_true", help="continue the run saved in OUTPUT")
    run.add_argument("--keep-epochs", action="store_true", help="keep every epoch's checkpoint")
    options.add_compute_device_option(run)
    options.add_quiet_option(p, "no progress bars")
    p.add_argument("--no-default", action="store_true",
                   help="do not make the result the default encoder for its text family")
    p.set_defaults(run=run_train)


def add_front_end_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--front-end``, shared by ``train-encoder`` and ``import-tpos``."""
    parser.add_argument(
        "--front-end",
        choices=("stft", "mel"),
        default="stft",
        help="map fed to the encoder: stft (default; the linear STFT map the official inference uses) or mel "
        "(what the official encoder was trained on: 128 bands, n_fft 2048)",
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
    add_front_end_option(p)
    add_floor_option(p, default="official")
    p.add_argument(
        "--text-family",
        default="clip-vit-l-14",
        help="the text encoder the weights were aligned to (official: clip-vit-l-14, SD 1.4)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing checkpoint")
    p.add_argument("--no-default", action="store_true",
                   help="do not make the result the default encoder for its text family")
    p.set_defaults(run=run_import)


# --- run functions ------------------------------------------------------------------------------------


def run_import(args: argparse.Namespace) -> int:
    from tpos_live.audio.spectrogram import SpectrogramConfig
    from tpos_live.conditioning.official import import_official

    replacing = _check_import_paths(args)
    spectrogram = (
        SpectrogramConfig(kind="stft", floor=args.spectrogram_floor)
        if args.front_end == "stft"
        else SpectrogramConfig(kind="mel", n_fft=2048, floor=args.spectrogram_floor)
    )
    weights, config = import_official(
        args.encoder, args.map, args.output, spectrogram=spectrogram, text_family=args.text_family
    )
    print(f"{written(weights, replacing)} and {config}", file=sys.stderr)
    _make_default(weights, args.no_default, lambda message: print(message, file=sys.stderr))
    return 0


def run_train(args: argparse.Namespace) -> int:
    from tpos_live.runtime import resolve_device
    from tpos_live.training.distributed import join_from_environment

    _settings_from_args(args)  # bad values fail before anything else
    check_train_paths(args)
    device, _ = resolve_device(args.compute_device, "float32")
    processes, device = join_from_environment(device)
    try:
        return _train(args, device, processes)
    finally:
        processes.close()


def _train(args: argparse.Namespace, device: str, processes: Processes) -> int:
    import torch

    from tpos_live.conditioning.tpos_encoder import TPoSConfig
    from tpos_live.training.datasets import WindowDataset
    from tpos_live.training.trainer import TPoSTrainer, fit

    say = _printer(args.quiet) if processes.is_main else _silent
    config, spectrogram, template = _settings_from_args(args)
    with processes.main_first():  # rank 0 builds the cache and fetches the models; the others read them
        train, val, labels = _prepare_data(args, spectrogram, config.seed, say, progress=processes.is_main)
        targets = _text_targets(args, labels, template, device, say, progress=processes.is_main)
    tpos_config = TPoSConfig(
        embed_dim=targets.dim,
        segments=spectrogram.segments,
        spectrogram=spectrogram,
        text_family=targets.family,
    )
    encoder, map_model = _initial_modules(args.init, tpos_config, config.seed)
    trainer = TPoSTrainer(encoder, map_model, tpos_config, targets, config, device, processes)
    index = {label: i for i, label in enumerate(labels)}
    train_set = WindowDataset(
        [entry for _, entry in train],
        [index[clip.label] for clip, _ in train],
        spectrogram,
        random_crop=True,
        seed=config.seed,
    )
    val_set = WindowDataset(
        [entry for _, entry in val], [index[clip.label] for clip, _ in val], spectrogram, random_crop=False
    )
    threads = f" (threads: {torch.get_num_threads()})" if device == "cpu" else ""
    where = f"{processes.world_size} processes on {device.split(':')[0]}" if processes.distributed else device
    say(
        f"training on {len(train_set)} clips, validating on {len(val_set)}, {len(labels)} labels, "
        f"{targets.family} text space ({targets.dim} wide, {targets.text_target} targets), on {where}{threads}"
    )
    result = fit(
        trainer,
        train_set,
        val_set,
        args.output,
        resume=args.resume,
        workers=args.data_workers,
        keep_epochs=args.keep_epochs,
        say=say,
        progress=not args.quiet,
    )
    say(
        f"done at step {result.step}: best validation loss {result.best_val_loss:.4f} in {result.best}; "
        f"last in {result.last}"
    )
    if processes.is_main:
        _make_default(result.best, args.no_default, say)
    return 0


def _make_default(checkpoint: Path, skip: bool, say) -> None:
    """An imported or trained encoder becomes the default conditioning for its text family (issue 3)."""
    from tpos_live.conditioning.providers import set_default_encoder

    if skip:
        say(f"use it with `tpos-live render --encoder {checkpoint}`")
        return
    family = set_default_encoder(checkpoint)
    say(f"{checkpoint} is now the default audio encoder for {family} models (render and live use it "
        f"when --encoder is not given)")


def _settings_from_args(args: argparse.Namespace):
    from tpos_live.audio.spectrogram import SpectrogramConfig
    from tpos_live.training.datasets import PromptTemplate
    from tpos_live.training.trainer import TrainConfig

    try:
        mel = args.front_end == "mel"
        spectrogram = SpectrogramConfig(
            kind=args.front_end,
            sample_rate=args.front_end_rate,
            n_fft=args.n_fft or (2048 if mel else 1024),
            hop_length=args.hop_length,
            height=args.height,
            segment_frames=args.segment_frames,
            segments=args.segments,
            floor=args.spectrogram_floor,
            **({"n_mels": args.height} if mel else {}),
        )
        given = {
            name: getattr(args, name)
            for name in (
                "epochs",
                "batch_size",
                "lr",
                "max_lr",
                "cycle_epochs",
                "map_lr",
                "seed",
                "max_steps",
                "grad_clip",
            )
        }
        config = TrainConfig(
            **{name: value for name, value in given.items() if value is not None},
            balanced=args.balanced,
            amp=not args.no_amp,
        )
        template = PromptTemplate(args.label_prompt)
        if args.val_fraction is not None and not 0.0 <= args.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must lie in [0, 1), got {args.val_fraction}")
        if args.data_workers < 0:
            raise ValueError(f"--data-workers must be at least 0, got {args.data_workers}")
    except ValueError as error:
        raise UserError(str(error)) from None
    return config, spectrogram, template


def _prepare_data(
    args: argparse.Namespace, spectrogram, seed: int, say: Callable[[str], None], *, progress: bool = True
):
    """Find the clips, cache their spectrograms, split: ``(train, val, labels)``, clips paired with their
    cache entries."""
    from tpos_live.training.datasets import VAL_FRACTION, SpectrogramCache, find_clips, split_clips

    fold = {} if args.val_fold is None else {"val_fold": args.val_fold}
    found = find_clips(args.data, args.layout, audio_dir=args.audio_dir, **fold)
    if found.missing:
        say(
            f"warning: {len(found.missing)} clips the CSV lists are not in the audio folder and are left out "
            f"(first: {found.missing[0]})"
        )
    cache = SpectrogramCache(args.cache or args.output / "cache", spectrogram)
    entries, failures = cache.prepare(
        [clip.path for clip in found.clips], workers=max(args.data_workers, 1), progress=progress and not args.quiet
    )
    if failures:
        first_reason = next(iter(failures.values()))
        say(f"warning: {len(failures)} clips could not be decoded and are left out (first: {first_reason})")
    usable = [(clip, entry) for clip, entry in zip(found.clips, entries, strict=True) if entry is not None]
    if not usable:
        raise UserError(f"none of the {len(found.clips)} clips in '{args.data}' could be decoded")
    entry_of = {clip: entry for clip, entry in usable}
    fraction = VAL_FRACTION if args.val_fraction is None else args.val_fraction
    train, val = split_clips([clip for clip, _ in usable], fraction, seed)
    labels = sorted({clip.label for clip, _ in usable})
    if len(labels) < 2:
        raise UserError(
            f"'{args.data}' has one label ({labels[0]!r}): contrastive training needs at least two"
        )
    return [(c, entry_of[c]) for c in train], [(c, entry_of[c]) for c in val], labels


def _text_targets(
    args: argparse.Namespace,
    labels: list[str],
    template,
    device: str,
    say: Callable[[str], None],
    *,
    progress: bool = True,
):
    from tpos_live.diffusion.loading import load_stack
    from tpos_live.diffusion.models import ModelSpec
    from tpos_live.training.targets import projected_text_encoder, text_targets

    progress = progress and not args.quiet
    say(f"loading the text encoder of {args.model}")
    stack = load_stack(ModelSpec(model=args.model, device=device, dtype="float32"), progress=progress)
    projection = None
    if args.text_target == "projected":
        projection = projected_text_encoder(args.model, stack.text_family, progress=progress).to(device)
        say(f"InfoNCE targets: projected text embeddings of {projection.name_or_path}")
    return text_targets(
        stack.text_encoder, stack.tokenizer, labels, template, family=stack.text_family, projection=projection
    )


def _initial_modules(init: str | None, tpos_config, seed: int):
    import torch

    from tpos_live.conditioning.checkpoint import load_tpos
    from tpos_live.conditioning.tpos_encoder import build_tpos_modules

    if init is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_tpos_modules(tpos_config)
    provider = load_tpos(init)
    if provider.config != tpos_config:
        raise UserError(
            f"--init checkpoint '{init}' is {provider.embed_dim} wide with front end "
            f"{provider.config.spectrogram} "
            f"for {provider.config.text_family}; this run needs {tpos_config.embed_dim} wide with "
            f"{tpos_config.spectrogram} for {tpos_config.text_family}: use matching options"
        )
    return provider.encoder, provider.map_model


def check_train_paths(args: argparse.Namespace) -> None:
    """What train-encoder reads and writes, checked before the text encoder loads: the data and the flags
    that depend on its layout, the run folder (-o) and the cache away from the data, --resume against
    the run saved there, --init outside the run folder it would be overwritten in."""
    from tpos_live.training.datasets import CSV_LAYOUTS, FIXED_SPLIT_LAYOUTS, resolved_layout
    from tpos_live.training.trainer import STATE_FILE

    if not args.data.exists():
        raise UserError(f"training data '{args.data}' does not exist: give a folder of clips or a data set's CSV")
    layout = resolved_layout(args.data, args.layout)
    if args.audio_dir is not None and layout not in CSV_LAYOUTS:
        raise UserError(f"--audio-dir is where a CSV's clips are and '{args.data}' is a {layout!r} data set: "
                        "leave --audio-dir out, or give the data set's CSV")
    if args.val_fold is not None and layout != "esc50":
        raise UserError(f"--val-fold picks an ESC-50 fold and '{args.data}' is a {layout!r} data set: leave it out")
    if args.val_fraction is not None and layout in FIXED_SPLIT_LAYOUTS:
        raise UserError(f"'{args.data}' is a {layout!r} data set, which says which clips validate: leave "
                        "--val-fraction out")
    check_output_folder(args.output)
    data = [("training data", args.data), ("audio folder", args.audio_dir)]
    refuse_output_on_inputs(args.output, "-o", [*data, *model_inputs(model=args.model, encoder=args.init)])
    if args.cache is not None:
        refuse_output_on_inputs(args.cache, "--cache", data)
    saved = (args.output / STATE_FILE).is_file()
    if args.resume and not saved:
        raise UserError(f"there is no training run to resume in '{args.output}' (no {STATE_FILE}): leave --resume "
                        "out to start one")
    if saved and not args.resume:
        raise UserError(f"'{args.output}' already holds a training run: pass --resume to continue it, or give "
                        "another output folder")
    if args.init is not None and args.resume:
        raise UserError("--init starts a new run from a checkpoint and --resume continues the saved one: pick one")
    if args.init is not None and Path(args.init).resolve().is_relative_to(args.output.resolve()):
        raise UserError(f"--init '{args.init}' is inside -o '{args.output}', whose checkpoints this run replaces: "
                        "copy it elsewhere, or give another -o")
    check_conditioning(args.init)


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


def _silent(_message: str) -> None:
    pass


def _printer(quiet: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if not quiet or message.startswith(("warning", "error")):
            print(message, file=sys.stderr, flush=True)

    return say
