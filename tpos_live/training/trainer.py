"""Training loop of the TPoS audio encoder and MAP: optimisers, schedule, checkpoints, resume, metrics.

The settings, and where their defaults come from, are :mod:`tpos_live.training.recipe`'s.

Under torchrun (:mod:`tpos_live.training.distributed`) N processes train one model with
DistributedDataParallel and compute what one process computes on the same global batch of
``batch_size`` clips; validation is shared out by batches; rank 0 writes the files below.

Files in the output folder::

    last.safetensors/.json   our checkpoint format (``save_tpos``), written after every epoch
    best.safetensors/.json   the checkpoint of the lowest validation loss so far
    epoch-NNN.*              every epoch's checkpoint, when asked to keep them
    training-state.pt        weights, optimiser, scheduler and RNG states, global step: for resuming
                             (with any number of processes)
    metrics.jsonl            one JSON object per epoch: loss terms, retrieval, learning rate, time

``training-state.pt`` holds tensors and plain containers only and is read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from tpos_live.audio.spectrogram import SpectrogramConfig
from tpos_live.conditioning.checkpoint import save_tpos
from tpos_live.conditioning.tpos_encoder import EncoderOutput, MappingModule, TPoSAudioEncoder, TPoSConfig
from tpos_live.errors import UserError
from tpos_live.fileio import write_atomically
from tpos_live.training.datasets import EpochBatchSampler, WindowDataset, evaluation_batches
from tpos_live.training.distributed import GlobalBatchDropout, Processes, use_global_batch_norm
from tpos_live.training.losses import (
    TERM_NAMES,
    LossTerms,
    attention_pooled,
    retrieval_accuracy,
    spec_augment_masks,
    tpos_loss,
)
from tpos_live.training.recipe import TrainConfig
from tpos_live.training.targets import TextTargets

STATE_FORMAT = "tpos-live-training-state"
STATE_VERSION = 1
STATE_FILE = "training-state.pt"
METRICS_FILE = "metrics.jsonl"
# Settings a resumed run may change; any other difference would make it a different run.
RESUMABLE_CHANGES = frozenset({"epochs", "max_steps"})
# What a state written before a setting existed was trained with.
LEGACY_TEXT_TARGET = "pooled"


class _Trained(nn.Module):
    """Encoder and MAP as one module with one forward per step (what DistributedDataParallel expects):
    the original maps, their SpecAugment view, and MAP of the original's pooled vector."""

    def __init__(self, encoder: TPoSAudioEncoder, map_model: MappingModule) -> None:
        super().__init__()
        self.encoder = encoder
        self.map_model = map_model

    def forward(
        self, maps: torch.Tensor, augmented: torch.Tensor
    ) -> tuple[EncoderOutput, EncoderOutput, torch.Tensor]:
        output = self.encoder(maps)
        return output, self.encoder(augmented), self.map_model(attention_pooled(output))


class TPoSTrainer:
    """One encoder + MAP under training: steps, evaluation, and the state that resumes it.

    ``step`` counts optimiser steps in all, ``epoch`` the completed epochs, ``batch_in_epoch`` the
    batches done of the current one. With several ``processes`` (torchrun) each step takes this
    process's share of the global batch, and the losses are those of the global batch (see
    :mod:`tpos_live.training.distributed`).
    """

    def __init__(
        self,
        encoder: TPoSAudioEncoder,
        map_model: MappingModule,
        tpos_config: TPoSConfig,
        targets: TextTargets,
        config: TrainConfig,
        device: str | torch.device = "cpu",
        processes: Processes | None = None,
    ) -> None:
        """In steps: 1. check that the parts fit; 2. put the modules and text targets on ``device``;
        3. seed the run's own generators; 4. join encoder and MAP into the module a step runs;
        5. make the official optimisers and schedule; 6. choose the precision; 7. start at step 0."""
        self.processes = processes or Processes()
        _check_parts_fit(encoder, tpos_config, targets, config, self.processes)
        self.tpos_config, self.targets, self.config = tpos_config, targets, config
        self.device = torch.device(device)
        self.encoder, self.map_model = encoder.to(self.device), map_model.to(self.device)
        self.text_contrastive = targets.contrastive.to(self.device)
        self.text_tokens = targets.tokens.to(self.device)
        self.augment_generator = torch.Generator().manual_seed(config.seed)
        self.dropout_generator = torch.Generator(self.device).manual_seed(config.seed + 1)
        self.trained = self._trained_module()
        self.optimizer, self.map_optimizer, self.scheduler = self._optimisers()
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_val_loss = math.inf

    def _trained_module(self) -> nn.Module:
        """Encoder and MAP as one module whose dropout and BatchNorm see the global batch; wrapped in
        DistributedDataParallel when there are several processes."""
        self.map_model.drop = GlobalBatchDropout(self.map_model.drop.p, self.processes, self.dropout_generator)
        trained = _Trained(self.encoder, self.map_model)
        if not self.processes.distributed:
            return trained
        use_global_batch_norm(self.encoder)
        return DistributedDataParallel(
            trained,
            device_ids=[self.device] if self.device.type == "cuda" else None,
            gradient_as_bucket_view=True,  # MAP's 1.8 GB of gradients live in the buckets, not twice
        )

    def _optimisers(
        self,
    ) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """The encoder's SGD under its cyclic schedule, and MAP's Adam."""
        config = self.config
        optimizer = torch.optim.SGD(
            self.encoder.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        # Fused: one pass over MAP's 454M parameters per step instead of several (~6x faster on a CPU,
        # where the Adam step otherwise outweighs the encoder's forward and backward passes).
        map_optimizer = torch.optim.Adam(self.map_model.parameters(), lr=config.map_lr, fused=True)
        scheduler = torch.optim.lr_scheduler.CyclicLR(
            optimizer, base_lr=config.lr, max_lr=config.max_lr, step_size_up=config.cycle_epochs, mode="triangular"
        )
        return optimizer, map_optimizer, scheduler

    def _amp_dtype(self) -> torch.dtype | None:
        """Mixed precision's type on CUDA (bfloat16 where the GPU has it), None for full precision."""
        if not self.config.amp or self.device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    @property
    def steps_exhausted(self) -> bool:
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _augmented(self, maps: torch.Tensor, generator: torch.Generator, global_rows: int) -> torch.Tensor:
        """The SpecAugment view of ``maps``, this process's rows of a batch of ``global_rows``."""
        masks = spec_augment_masks((global_rows, *maps.shape[1:]), self.config.spec_augment, generator)
        rows = self.processes.rows(len(maps)) if global_rows != len(maps) else slice(None)
        return maps.masked_fill(masks[rows], self.config.spec_augment.fill)

    def train_step(self, maps: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One optimiser step on this process's share of a global batch: ``maps (b, N, H, W)``, ``labels
        (b,)`` label indices. Returns the global batch's loss terms (the same in every process)."""
        self.trained.train()
        world = self.processes.world_size
        augmented = self._augmented(maps, self.augment_generator, len(maps) * world)
        maps, augmented, labels = (t.to(self.device, non_blocking=True) for t in (maps, augmented, labels))
        with self._autocast():
            output, output_augmented, tokens = self.trained(maps, augmented)
        # InfoNCE over the global batch; MAP's MSE over this share (DDP's average makes it global).
        gather = self.processes.gather_rows
        terms = tpos_loss(
            EncoderOutput(*map(gather, output)),
            EncoderOutput(*map(gather, output_augmented)),
            tokens,
            self.text_contrastive[self.processes.gather_labels(labels)],
            self.text_tokens[labels],
            temperature=self.config.temperature,
            augment_weight=self.config.augment_weight,
        )
        # Zeroed in place: freeing and reallocating MAP's 1.8 GB of gradients every step costs more
        # than the step's arithmetic on a CPU (page faults).
        self.optimizer.zero_grad(set_to_none=False)
        self.map_optimizer.zero_grad(set_to_none=False)
        self.scaler.scale(terms.total).backward()
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            self.scaler.unscale_(self.map_optimizer)
            parameters = [*self.encoder.parameters(), *self.map_model.parameters()]
            torch.nn.utils.clip_grad_norm_(parameters, self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.step(self.map_optimizer)
        self.scaler.update()
        self.step += 1
        self.batch_in_epoch += 1
        return self._global_terms(terms)

    def _global_terms(self, terms: LossTerms) -> dict[str, float]:
        values = terms.as_floats()
        if self.processes.distributed:
            share = torch.tensor(values["map"], dtype=torch.float64, device=self.device)
            values["map"] = float(self.processes.sum(share)) / self.processes.world_size
            values["total"] = (
                values["text_last"] + self.config.augment_weight * values["augment"] + values["text_pooled"]
                + values["map"]
            )
        return values

    def end_epoch(self) -> None:
        """The schedule moves once per epoch, as in the official recipe."""
        self.scheduler.step()
        self.epoch += 1
        self.batch_in_epoch = 0

    @torch.no_grad()
    def evaluate(self, loader: DataLoader) -> dict[str, float]:
        """Mean loss terms over the batches of ``loader`` (eval mode; batch ``j``'s SpecAugment masks come
        from seed ``(seed + 1) * 1_000_003 + j``, so the figure compares across epochs) and audio-to-text
        retrieval over the label texts: ``top1``/``top5`` from s_N, ``top1_pooled``/``top5_pooled`` from o.

        With several processes each gives its own batches of :func:`evaluation_batches` (its ``i``-th
        being batch ``i * N + rank``) and the sums are shared, so every process returns the figures one
        process gets from all the batches."""
        self.encoder.eval()
        self.map_model.eval()
        names = (*TERM_NAMES, "total")
        kinds = [f"top{k}{suffix}" for suffix in ("", "_pooled") for k in (1, 5)]
        sums = torch.zeros(len(names) + len(kinds) + 1, dtype=torch.float64)
        for i, (maps, labels) in enumerate(loader):
            batch_number = i * self.processes.world_size + self.processes.rank
            generator = torch.Generator().manual_seed((self.config.seed + 1) * 1_000_003 + batch_number)
            augmented = self._augmented(maps, generator, len(maps))
            maps, augmented, labels = (t.to(self.device) for t in (maps, augmented, labels))
            with self._autocast():
                output, output_augmented = self.encoder(maps), self.encoder(augmented)
                tokens = self.map_model(attention_pooled(output))
            terms = tpos_loss(
                output,
                output_augmented,
                tokens,
                self.text_contrastive[labels],
                self.text_tokens[labels],
                temperature=self.config.temperature,
                augment_weight=self.config.augment_weight,
            )
            count = len(labels)
            values = terms.as_floats()
            hits = [
                accuracy * count
                for vectors in (output.last, attention_pooled(output))
                for accuracy in retrieval_accuracy(vectors.float().cpu(), self.targets.contrastive, labels.cpu())
                .values()
            ]
            sums += torch.tensor([*(values[name] * count for name in names), *hits, count], dtype=torch.float64)
        sums = self.processes.sum(sums.to(self.device)).cpu()
        count = float(sums[-1])
        if count == 0:
            raise ValueError("evaluate() needs at least one batch")
        metrics = {name: float(total) / count for name, total in zip(names, sums, strict=False)}
        for kind, total in zip(kinds, sums[len(names) : -1], strict=True):
            metrics[kind] = round(float(total)) / count
        return metrics

    # --- state -----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs, as tensors and plain containers; nothing in it depends on the
        number of processes (a run resumes with any)."""
        return {
            "format": STATE_FORMAT,
            "format_version": STATE_VERSION,
            "encoder": self.encoder.state_dict(),
            "map": self.map_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "map_optimizer": self.map_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_val_loss": self.best_val_loss,
            "torch_rng": torch.get_rng_state(),
            "augment_rng": self.augment_generator.get_state(),
            "dropout_rng": self.dropout_generator.get_state(),
            "train_config": dataclasses.asdict(self.config),
            "tpos_config": dataclasses.asdict(self.tpos_config),
            "labels": list(self.targets.labels),
            "texts": list(self.targets.texts),
            "text_target": self.targets.text_target,
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "training state") -> None:
        """Restore a :meth:`state_dict`. Raises UserError when it belongs to a different run."""
        self._check_same_run(state, source)
        self.encoder.load_state_dict(state["encoder"])
        self.map_model.load_state_dict(state["map"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.map_optimizer.load_state_dict(state["map_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.best_val_loss = float(state["best_val_loss"])
        torch.set_rng_state(state["torch_rng"])
        self.augment_generator.set_state(state["augment_rng"])
        if "dropout_rng" in state:  # a state from before MAP's dropout had a generator of its own keeps the seed
            self.dropout_generator.set_state(state["dropout_rng"])

    def _check_same_run(self, state: dict[str, Any], source: str) -> None:
        if state.get("format") != STATE_FORMAT or state.get("format_version") != STATE_VERSION:
            raise UserError(f"{source} is not a {STATE_FORMAT} version {STATE_VERSION} file")
        if state["labels"] != list(self.targets.labels) or state["texts"] != list(self.targets.texts):
            raise UserError(
                f"{source} was trained on other labels or prompts ({len(state['labels'])} labels): resume "
                "with the same data and --prompt, or start a new run in another folder"
            )
        text_target = state.get("text_target", LEGACY_TEXT_TARGET)
        if text_target != self.targets.text_target:
            raise UserError(
                f"{source} was trained with --text-target {text_target}, now {self.targets.text_target}: "
                f"resume with --text-target {text_target}, or start a new run in another folder"
            )
        if _tpos_config_of(state["tpos_config"]) != self.tpos_config:
            raise UserError(
                f"{source} is of an encoder with another size, front end or text encoder: resume with the "
                "same --model and front-end options, or start a new run in another folder"
            )
        current = dataclasses.asdict(self.config)
        for name, value in state["train_config"].items():
            if name not in RESUMABLE_CHANGES and current.get(name) != value:
                raise UserError(
                    f"{source} was trained with {name}={value!r}, now {name}={current.get(name)!r}: "
                    "resume with "
                    f"the same settings (only {', '.join(sorted(RESUMABLE_CHANGES))} may change)"
                )

    def save_state(self, path: Path) -> None:
        write_atomically(path, lambda temp: torch.save(self.state_dict(), temp))

    def load_state(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch reports damage with several exception types
            raise UserError(
                f"cannot read the training state '{path}' ({type(error).__name__}): it is damaged; "
                "start a new run in another folder"
            ) from error
        if not isinstance(state, dict):
            raise UserError(f"training state '{path}' is not a {STATE_FORMAT} file")
        self.load_state_dict(state, f"training state '{path}'")


def _check_parts_fit(
    encoder: TPoSAudioEncoder, tpos_config: TPoSConfig, targets: TextTargets, config: TrainConfig, processes: Processes
) -> None:
    """The encoder, its config and the text targets have one width, and the batch splits over the processes."""
    if targets.dim != tpos_config.embed_dim or encoder.embed_dim != tpos_config.embed_dim:
        raise ValueError(
            f"text targets ({targets.dim}), encoder ({encoder.embed_dim}) and config "
            f"({tpos_config.embed_dim}) must have one width"
        )
    if config.batch_size % processes.world_size:
        raise UserError(
            f"the batch of {config.batch_size} clips does not split evenly over "
            f"{processes.world_size} processes: choose a --batch-size that is a multiple of "
            f"{processes.world_size}"
        )


def _tpos_config_of(saved: dict[str, Any]) -> TPoSConfig | None:
    """The TPoSConfig a state recorded (its front end completed as :class:`SpectrogramConfig` completes
    a config written before a field existed), or None when it is not one."""
    try:
        spectrogram = SpectrogramConfig(**saved["spectrogram"])
        return TPoSConfig(**{**saved, "spectrogram": spectrogram})
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class FitResult:
    """Where a run ended: the checkpoints written and the last epoch's metrics."""

    output_dir: Path
    step: int
    epoch: int
    best_val_loss: float
    metrics: dict[str, Any]

    @property
    def best(self) -> Path:
        return self.output_dir / "best.safetensors"

    @property
    def last(self) -> Path:
        return self.output_dir / "last.safetensors"


def fit(
    trainer: TPoSTrainer,
    train_set: WindowDataset,
    val_set: WindowDataset,
    output_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    workers: int = 0,
    keep_epochs: bool = False,
    say: Callable[[str], None] = print,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train until ``config.epochs`` epochs (or ``max_steps`` steps) are done; evaluate, checkpoint
    and write a metrics line after every epoch, and when ``max_steps`` stops one part-way.

    ``resume`` continues the run saved in ``output_dir`` from its step; without it, a folder that
    already holds a run is refused (UserError). ``on_step(step, terms)`` hears every step's loss terms.
    With several processes every one calls this alike; rank 0 alone prints and writes.

    In steps: 1. resume the saved run, or refuse to start over one; 2. check that the data fills a batch
    and validates; 3. make the output folder; 4. run epochs until the recipe's end.
    """
    if not trainer.processes.is_main:
        say, progress = silent, False
    run = _Fit(trainer, Path(output_dir), workers, keep_epochs, say, progress, on_step)
    run.start(resume)
    sampler = run.batch_sampler(train_set, val_set)
    run.open_output_folder()
    val_loader = run.validation_loader(val_set)
    metrics: dict[str, Any] = {}
    while trainer.epoch < trainer.config.epochs and not trainer.steps_exhausted:
        metrics = run.epoch(train_set, sampler, val_loader)
    return FitResult(run.output_dir, trainer.step, trainer.epoch, trainer.best_val_loss, metrics)


def silent(_message: str) -> None:
    """A ``say`` that says nothing (the processes other than rank 0)."""


@dataclass(frozen=True)
class _Fit:
    """One :func:`fit` call: the trainer, where it writes, and how it reports."""

    trainer: TPoSTrainer
    output_dir: Path
    workers: int
    keep_epochs: bool
    say: Callable[[str], None]
    progress: bool
    on_step: Callable[[int, dict[str, float]], None] | None

    def start(self, resume: bool) -> None:
        """Load the saved run to resume it, or refuse to start over one."""
        state_path = self.output_dir / STATE_FILE
        if resume:
            if not state_path.is_file():
                raise UserError(f"there is no training run to resume in '{self.output_dir}' (no {STATE_FILE})")
            trainer = self.trainer
            trainer.load_state(state_path)
            self.say(f"resuming at step {trainer.step} (epoch {trainer.epoch + 1}, batch {trainer.batch_in_epoch})")
        elif state_path.exists():
            raise UserError(
                f"'{self.output_dir}' already holds a training run: pass --resume to continue it, "
                "or give another output folder"
            )

    def batch_sampler(self, train_set: WindowDataset, val_set: WindowDataset) -> EpochBatchSampler:
        """The sampler of every epoch's batches, once the data is known to fill a batch and to validate."""
        config = self.trainer.config
        if len(val_set) == 0:
            raise UserError("no validation clips: raise --val-fraction or give a data set with a test split")
        sampler = EpochBatchSampler(
            train_set.labels,
            config.batch_size,
            balanced=config.balanced,
            seed=config.seed,
            processes=self.trainer.processes,
        )
        if sampler.batches_per_epoch == 0:
            raise UserError(
                f"batch size {config.batch_size} is larger than the {len(train_set)} training clips: "
                "lower --batch-size"
            )
        return sampler

    def open_output_folder(self) -> None:
        processes = self.trainer.processes
        processes.barrier()  # every process has read the state before rank 0 writes a new one
        if processes.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)

    def validation_loader(self, val_set: WindowDataset) -> DataLoader:
        # Loaders get generators of their own: by default each new iterator draws a seed from the global
        # RNG, which would make a resumed run differ from an uninterrupted one.
        config = self.trainer.config
        return DataLoader(
            val_set,
            batch_sampler=evaluation_batches(len(val_set), config.batch_size, self.trainer.processes),
            num_workers=self.workers,
            generator=torch.Generator().manual_seed(config.seed),
        )

    def epoch(self, train_set: WindowDataset, sampler: EpochBatchSampler, val_loader: DataLoader) -> dict[str, Any]:
        """Train an epoch (or up to ``max_steps``), validate, checkpoint, report. Returns its metrics."""
        trainer = self.trainer
        epoch, started, lr = trainer.epoch, time.perf_counter(), trainer.lr
        train_means = self._train_steps(self._train_loader(train_set, sampler))
        complete = trainer.batch_in_epoch == sampler.batches_per_epoch
        if complete:
            trainer.end_epoch()
        val = trainer.evaluate(val_loader)
        is_best = val["total"] < trainer.best_val_loss
        if is_best:
            trainer.best_val_loss = val["total"]
        metrics = {
            "epoch": epoch + 1,
            "complete": complete,
            "step": trainer.step,
            "lr": lr,
            "train": train_means,
            "val": val,
            "best": is_best,
            "seconds": round(time.perf_counter() - started, 3),
        }
        self._record(metrics)
        self._report(metrics)
        return metrics

    def _train_loader(self, train_set: WindowDataset, sampler: EpochBatchSampler) -> DataLoader:
        """The current epoch's batches, less those a resumed run has done."""
        trainer = self.trainer
        sampler.set_epoch(trainer.epoch, skip=trainer.batch_in_epoch)
        train_set.set_epoch(trainer.epoch)
        return DataLoader(
            train_set,
            batch_sampler=sampler,
            num_workers=self.workers,
            pin_memory=trainer.device.type == "cuda",
            generator=torch.Generator().manual_seed(trainer.config.seed + trainer.epoch),
        )

    def _train_steps(self, loader: DataLoader) -> dict[str, float]:
        """A step per batch of ``loader`` until it ends or ``max_steps`` is reached: the mean loss terms."""
        trainer = self.trainer
        description = f"epoch {trainer.epoch + 1}/{trainer.config.epochs}"
        sums: dict[str, float] = {}
        batches = 0
        with tqdm(loader, desc=description, unit="step", disable=not self.progress, leave=False) as bar:
            for maps, labels in bar:
                terms = trainer.train_step(maps, labels)
                if self.on_step is not None:
                    self.on_step(trainer.step, terms)
                batches += 1
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + value
                bar.set_postfix({name: f"{sums[name] / batches:.3f}" for name in (*TERM_NAMES, "total")})
                if trainer.steps_exhausted:
                    break
        return {name: total / batches for name, total in sums.items()} if batches else {}

    def _record(self, metrics: dict[str, Any]) -> None:
        """Rank 0 writes the epoch's checkpoints, the state and the metrics line; the others wait for it."""
        processes = self.trainer.processes
        if processes.is_main:
            self._save_checkpoints(metrics["epoch"], metrics["best"])
            with (self.output_dir / METRICS_FILE).open("a") as file:
                file.write(json.dumps(metrics) + "\n")
        processes.barrier()

    def _save_checkpoints(self, epoch: int, is_best: bool) -> None:
        trainer = self.trainer
        names = ["last"] + (["best"] if is_best else []) + ([f"epoch-{epoch:03d}"] if self.keep_epochs else [])
        for name in names:
            save_tpos(self.output_dir / name, trainer.encoder, trainer.map_model, trainer.tpos_config)
        trainer.save_state(self.output_dir / STATE_FILE)  # last: a crash before it leaves the previous state whole

    def _report(self, metrics: dict[str, Any]) -> None:
        val = metrics["val"]
        self.say(
            f"epoch {metrics['epoch']}{'' if metrics['complete'] else ' (part)'}: step {metrics['step']}, "
            f"train loss {metrics['train'].get('total', math.nan):.4f}, val loss {val['total']:.4f}, "
            f"val top-1 {val['top1']:.3f} top-5 {val['top5']:.3f}{' (best)' if metrics['best'] else ''}"
        )
