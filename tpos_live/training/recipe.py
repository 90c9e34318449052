"""How the TPoS audio encoder and MAP are trained: the settings of a run and where their defaults come from.

Importable without torch, so that ``tpos-live train-encoder --help`` reads its defaults from here.

Defaults follow the official TPoS training script (ku-vai/TPoS ``train_audio_encoder.py``, read from a
public copy) where it says what it does:

- encoder: SGD, lr 1e-3, momentum 0.9, weight decay 5e-4, under ``CyclicLR(base_lr=1e-3, max_lr=0.1,
  step_size_up=5, mode="triangular")`` stepped once per epoch (so the momentum cycles 0.9 -> 0.8 too,
  torch's default ``cycle_momentum``); MAP: Adam, lr 1e-3, constant;
- 50 epochs, batch 150, seed 42, full batches only; MAP trained on o (not N * alpha * s);
- checkpoint whenever the validation loss reaches a new minimum;
- SpecAugment as its data set code masks (:class:`SpecAugmentConfig`).

Our choices where the official code gives no answer or has defects (docs/design.md, "The official
code"): the losses of :mod:`tpos_live.training.losses` (logit scale 1 / 0.07, augmented view contrasted
with the original); a held-out split of the training clips unless the data set fixes one (official:
VGGSound's test list); the backbone starts from random weights (official: timm's ImageNet ResNet-18,
which cannot be fetched here; ``--init`` starts from any of our checkpoints instead); mixed precision
(bfloat16 where the GPU has it, else float16 with loss scaling) on CUDA only; MAP's dropout masks from a
generator of the run's own (seeded, saved, resumed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TEMPERATURE = 0.07  # paper, eq. (2)
AUGMENT_WEIGHT = 0.6  # paper: lambda_s of L_semantic


@dataclass(frozen=True)
class SpecAugmentConfig:
    """Masks of SpecAugment (Park et al. 2019) on each segment map, filled with silence (0 in our maps).

    Defaults follow what the official TPoS data set code masks: two bands of up to 30% of the rows
    (frequency) and two of up to 15% of the columns (time) per segment. (It names them the other way
    round, but indexes a segment as rows x columns = 128 mel bands x 153 frames.) Each band's width is
    uniform in ``[0, max_fraction * size]`` and its start uniform over the positions where it fits.
    """

    freq_masks: int = 2
    max_freq_fraction: float = 0.3
    time_masks: int = 2
    max_time_fraction: float = 0.15
    fill: float = 0.0

    def __post_init__(self) -> None:
        if self.freq_masks < 0 or self.time_masks < 0:
            raise ValueError("freq_masks and time_masks must be at least 0")
        for name in ("max_freq_fraction", "max_time_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")


@dataclass(frozen=True)
class TrainConfig:
    """How to train (see the module docstring for where each default comes from).

    Attributes:
        epochs: passes over the training clips.
        batch_size: clips per step, over all processes (the InfoNCE negatives are the rest of the batch).
        lr, max_lr, cycle_epochs: the encoder's CyclicLR: from ``lr`` up to ``max_lr`` over
            ``cycle_epochs`` epochs and back down, triangular, stepped once per epoch.
        momentum, weight_decay: the encoder's SGD.
        map_lr: MAP's Adam learning rate.
        temperature, augment_weight: of the losses (paper: 0.07 and 0.6).
        spec_augment: the masks of the augmented view.
        balanced: draw batches class-balanced (``EpochBatchSampler``).
        seed: fixes initial weights' draw (CLI), the batch order, crops, masks and dropout.
        amp: mixed precision on CUDA (bfloat16, or float16 with loss scaling); no effect on a CPU.
        max_steps: stop after this many optimiser steps in all (None: run all epochs).
        grad_clip: clip the gradient norm of encoder and MAP together to this (ours; the official
            code does not clip). Guards the LSTM against the large steps of a high learning rate.
    """

    epochs: int = 50
    batch_size: int = 150
    lr: float = 1e-3
    max_lr: float = 0.1
    cycle_epochs: int = 5
    momentum: float = 0.9
    weight_decay: float = 5e-4
    map_lr: float = 1e-3
    temperature: float = TEMPERATURE
    augment_weight: float = AUGMENT_WEIGHT
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    balanced: bool = False
    seed: int = 42
    amp: bool = True
    max_steps: int | None = None
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.cycle_epochs < 1:
            raise ValueError("epochs and cycle_epochs must be at least 1, batch_size at least 2 (InfoNCE)")
        if not 0 < self.lr <= self.max_lr:
            raise ValueError(f"need 0 < lr <= max_lr, got lr={self.lr}, max_lr={self.max_lr}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0 or self.map_lr <= 0:
            raise ValueError("need momentum in [0, 1), weight_decay >= 0 and map_lr > 0")
        if self.temperature <= 0 or self.augment_weight < 0:
            raise ValueError("need temperature > 0 and augment_weight >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be None or at least 1, got {self.max_steps}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be None or positive, got {self.grad_clip}")
