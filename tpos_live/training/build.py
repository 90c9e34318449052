"""The composition root of training: from a :class:`~tpos_live.training.spec.TrainSpec`, check what the run
reads and writes, then build its data, the text targets of the model's stack and the trainer, and fit.

    train_encoder(TrainSpec(DataSpec(Path("sounds")), Path("runs/mine"), model="sd15-lcm"), say=print)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from tpos_live.conditioning.checkpoint import load_tpos
from tpos_live.conditioning.providers import set_default_encoder
from tpos_live.conditioning.tpos_encoder import MappingModule, TPoSAudioEncoder, TPoSConfig, build_tpos_modules
from tpos_live.diffusion.loading import load_stack
from tpos_live.diffusion.models import ModelSpec
from tpos_live.errors import UserError
from tpos_live.preflight import check_conditioning, check_output_folder, model_inputs, refuse_output_on_inputs
from tpos_live.runtime import resolve_device
from tpos_live.training.datasets import (
    LabelledClip,
    SpectrogramCache,
    WindowDataset,
    find_clips,
    resolved_layout,
    split_clips,
)
from tpos_live.training.distributed import Processes, join_from_environment
from tpos_live.training.spec import CSV_LAYOUTS, FIXED_SPLIT_LAYOUTS, FOLD_LAYOUTS, VAL_FRACTION, TrainSpec
from tpos_live.training.targets import TextTargets, projected_text_encoder, text_targets
from tpos_live.training.trainer import STATE_FILE, FitResult, TPoSTrainer, fit, silent

Say = Callable[[str], None]
# Clips paired with their spectrogram cache entries.
CachedClips = list[tuple[LabelledClip, Path]]


def train_encoder(spec: TrainSpec, say: Say) -> FitResult:
    """Run ``spec`` to its end, in this process and any others torchrun started with it; the best
    checkpoint then becomes its text family's default encoder unless the spec says otherwise.

    In steps: 1. refuse bad paths before any model loads; 2. join torchrun's processes, if any;
    3. train (:func:`_train`). Raises UserError for what the user can fix."""
    check_paths(spec)
    device, _ = resolve_device(spec.compute_device, "float32")
    processes, device = join_from_environment(device)
    try:
        return _train(spec, device, processes, say if processes.is_main else silent)
    finally:
        processes.close()


def _train(spec: TrainSpec, device: str, processes: Processes, say: Say) -> FitResult:
    """In steps: 1. find, cache and split the clips, and encode the label texts (rank 0 first: it builds
    the cache and fetches the models, the others read them); 2. build the modules and the trainer;
    3. fit; 4. make the result the default encoder."""
    progress = processes.is_main and not spec.quiet
    with processes.main_first():
        train, val, labels = prepare_clips(spec, say, progress=progress)
        targets = load_text_targets(spec, labels, device, say, progress=progress)
    tpos_config = TPoSConfig(
        embed_dim=targets.dim,
        segments=spec.spectrogram.segments,
        spectrogram=spec.spectrogram,
        text_family=targets.family,
        backbone_width=spec.backbone_width,
        map_output=spec.map_output,
    )
    encoder, map_model = initial_modules(spec.init, tpos_config, spec.recipe.seed)
    trainer = TPoSTrainer(encoder, map_model, tpos_config, targets, spec.recipe, device, processes)
    train_set, val_set = window_datasets(spec, train, val, labels)
    say(_summary(train_set, val_set, targets, device, processes))
    result = fit(
        trainer,
        train_set,
        val_set,
        spec.output,
        resume=spec.resume,
        workers=spec.data.workers,
        keep_epochs=spec.keep_epochs,
        say=say,
        progress=not spec.quiet,
    )
    say(
        f"done at step {result.step}: best validation loss {result.best_val_loss:.4f} in {result.best}; "
        f"last in {result.last}"
    )
    if processes.is_main:
        make_default_encoder(result.best, skip=not spec.make_default, say=say)
    return result


def _summary(
    train_set: WindowDataset, val_set: WindowDataset, targets: TextTargets, device: str, processes: Processes
) -> str:
    threads = f" (threads: {torch.get_num_threads()})" if device == "cpu" else ""
    where = f"{processes.world_size} processes on {device.split(':')[0]}" if processes.distributed else device
    return (
        f"training on {len(train_set)} clips, validating on {len(val_set)}, {len(targets.labels)} labels, "
        f"{targets.family} text space ({targets.dim} wide, {targets.text_target} targets), on {where}{threads}"
    )


def make_default_encoder(checkpoint: Path, *, skip: bool, say: Say) -> None:
    """An imported or trained encoder becomes the default conditioning for its text family."""
    if skip:
        say(f"use it with `tpos-live render --encoder {checkpoint}`")
        return
    family = set_default_encoder(checkpoint)
    say(f"{checkpoint} is now the default audio encoder for {family} models (render and live use it "
        f"when --encoder is not given)")


# --- the steps ----------------------------------------------------------------------------------------


def check_paths(spec: TrainSpec) -> None:
    """What a run reads and writes, checked before the text encoder loads: the data and the settings
    that depend on its layout, the run folder and the cache away from the data, ``resume`` against the
    run saved there, ``init`` outside the run folder it would be overwritten in."""
    data = spec.data
    if not data.source.exists():
        raise UserError(f"training data '{data.source}' does not exist: give a folder of clips or a data set's CSV")
    layout = resolved_layout(data.source, data.layout)
    if data.audio_dir is not None and layout not in CSV_LAYOUTS:
        raise UserError(f"--audio-dir is where a CSV's clips are and '{data.source}' is a {layout!r} data set: "
                        "leave --audio-dir out, or give the data set's CSV")
    if data.val_fold is not None and layout not in FOLD_LAYOUTS:
        raise UserError(f"--val-fold picks an ESC-50 fold and '{data.source}' is a {layout!r} data set: "
                        "leave it out")
    if data.val_fraction is not None and layout in FIXED_SPLIT_LAYOUTS:
        raise UserError(f"'{data.source}' is a {layout!r} data set, which says which clips validate: leave "
                        "--val-fraction out")
    check_output_folder(spec.output)
    inputs = [("training data", data.source), ("audio folder", data.audio_dir)]
    refuse_output_on_inputs(spec.output, "-o", [*inputs, *model_inputs(model=spec.model, encoder=spec.init)])
    if data.cache is not None:
        refuse_output_on_inputs(data.cache, "--cache", inputs)
    _check_resume(spec)
    check_conditioning(spec.init)


def _check_resume(spec: TrainSpec) -> None:
    saved = (spec.output / STATE_FILE).is_file()
    if spec.resume and not saved:
        raise UserError(f"there is no training run to resume in '{spec.output}' (no {STATE_FILE}): leave --resume "
                        "out to start one")
    if saved and not spec.resume:
        raise UserError(f"'{spec.output}' already holds a training run: pass --resume to continue it, or give "
                        "another output folder")
    if spec.init is not None and spec.resume:
        raise UserError("--init starts a new run from a checkpoint and --resume continues the saved one: pick one")
    if spec.init is not None and Path(spec.init).resolve().is_relative_to(spec.output.resolve()):
        raise UserError(f"--init '{spec.init}' is inside -o '{spec.output}', whose checkpoints this run replaces: "
                        "copy it elsewhere, or give another -o")


def prepare_clips(spec: TrainSpec, say: Say, *, progress: bool) -> tuple[CachedClips, CachedClips, list[str]]:
    """Find the clips, cache their spectrograms, split: ``(train, val, labels)``, clips paired with their
    cache entries. Clips that cannot be decoded are left out with a warning."""
    data = spec.data
    fold = {} if data.val_fold is None else {"val_fold": data.val_fold}
    found = find_clips(data.source, data.layout, audio_dir=data.audio_dir, **fold)
    if found.missing:
        say(
            f"warning: {len(found.missing)} clips the CSV lists are not in the audio folder and are left out "
            f"(first: {found.missing[0]})"
        )
    cache = SpectrogramCache(data.cache or spec.output / "cache", spec.spectrogram)
    entries, failures = cache.prepare(
        [clip.path for clip in found.clips], workers=max(data.workers, 1), progress=progress
    )
    if failures:
        first_reason = next(iter(failures.values()))
        say(f"warning: {len(failures)} clips could not be decoded and are left out (first: {first_reason})")
    usable = [(clip, entry) for clip, entry in zip(found.clips, entries, strict=True) if entry is not None]
    if not usable:
        raise UserError(f"none of the {len(found.clips)} clips in '{data.source}' could be decoded")
    entry_of = {clip: entry for clip, entry in usable}
    fraction = VAL_FRACTION if data.val_fraction is None else data.val_fraction
    train, val = split_clips([clip for clip, _ in usable], fraction, spec.recipe.seed)
    labels = sorted({clip.label for clip, _ in usable})
    if len(labels) < 2:
        raise UserError(
            f"'{data.source}' has one label ({labels[0]!r}): contrastive training needs at least two"
        )
    return [(c, entry_of[c]) for c in train], [(c, entry_of[c]) for c in val], labels


def load_text_targets(spec: TrainSpec, labels: list[str], device: str, say: Say, *, progress: bool) -> TextTargets:
    """Each label's text targets, from the text encoder of ``spec.model`` (and, for projected targets,
    the CLIP it comes from)."""
    say(f"loading the text encoder of {spec.model}")
    stack = load_stack(ModelSpec(model=spec.model, device=device, dtype="float32"), progress=progress)
    projection = None
    if spec.text_target == "projected":
        projection = projected_text_encoder(spec.model, stack.text_family, progress=progress).to(device)
        say(f"InfoNCE targets: projected text embeddings of {projection.name_or_path}")
    return text_targets(
        stack.text_encoder, stack.tokenizer, labels, spec.data.prompt, family=stack.text_family, projection=projection
    )


def initial_modules(init: str | None, tpos_config: TPoSConfig, seed: int) -> tuple[TPoSAudioEncoder, MappingModule]:
    """The encoder and MAP a run starts from: drawn from ``seed`` (without touching the global generator),
    or loaded from the checkpoint ``init``, which must match ``tpos_config``."""
    if init is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_tpos_modules(tpos_config)
    provider = load_tpos(init)
    if provider.config != tpos_config:
        raise UserError(
            f"--init checkpoint '{init}' is {provider.embed_dim} wide (backbone "
            f"{provider.config.backbone_width}, MAP output {provider.config.map_output}) with front end "
            f"{provider.config.spectrogram} for {provider.config.text_family}; this run needs "
            f"{tpos_config.embed_dim} wide (backbone {tpos_config.backbone_width}, MAP output "
            f"{tpos_config.map_output}) with {tpos_config.spectrogram} for {tpos_config.text_family}: "
            f"use matching options"
        )
    return provider.encoder, provider.map_model


def window_datasets(
    spec: TrainSpec, train: CachedClips, val: CachedClips, labels: list[str]
) -> tuple[WindowDataset, WindowDataset]:
    """The training windows (randomly cropped, from the recipe's seed) and the validation windows (centred)."""
    index = {label: i for i, label in enumerate(labels)}
    train_set = WindowDataset(
        [entry for _, entry in train],
        [index[clip.label] for clip, _ in train],
        spec.spectrogram,
        random_crop=True,
        seed=spec.recipe.seed,
    )
    val_set = WindowDataset(
        [entry for _, entry in val], [index[clip.label] for clip, _ in val], spec.spectrogram, random_crop=False
    )
    return train_set, val_set
