"""The one interface every conditioning source implements: mono audio in, time-stamped conditions out.

A provider (the TPoS encoder, a zero-shot audio model, ...) turns audio into a :class:`ConditionTrack`:
complete ``encoder_hidden_states`` for the UNet (77 tokens in the diffusion model's text space), one per
moment of the audio, each with the weight (magnitude) of that moment. It learns what that text space
looks like from a :class:`TextSpace`, which the diffusion side builds from its own text encoder
(``tpos_live.diffusion.text``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from tpos_live.diffusion.text import TEXT_TOKENS, TextSpace
from tpos_live.errors import UserError

__all__ = ["TEXT_TOKENS", "ConditionProvider", "ConditionTrack", "TextSpace", "checked_mono"]

@dataclass(frozen=True)
class ConditionTrack:
    """Audio -> time-stamped conditions.

    Attributes:
        times: ``(K,)`` float64 seconds, ascending: the audio time each condition describes.
        conditions: ``(K, 77, D)`` float32, complete ``encoder_hidden_states`` for the UNet.
        weights: ``(K,)`` in [0, 1], the weight of that moment (TPoS: the attention weight alpha_n of
            the segment in its window, which carries its magnitude).
    """

    times: np.ndarray
    conditions: torch.Tensor
    weights: np.ndarray

    def __post_init__(self) -> None:
        count = len(self.times)
        if count < 1:
            raise ValueError("a condition track needs at least one condition")
        if self.times.shape != (count,) or self.weights.shape != (count,):
            raise ValueError(
                f"times and weights must both be ({count},), got {self.times.shape} and {self.weights.shape}"
            )
        if self.conditions.ndim != 3 or self.conditions.shape[:2] != (count, TEXT_TOKENS):
            raise ValueError(
                f"conditions must be ({count}, {TEXT_TOKENS}, D), got {tuple(self.conditions.shape)}"
            )
        if self.conditions.dtype != torch.float32:
            raise ValueError(f"conditions must be float32, got {self.conditions.dtype}")
        if np.any(np.diff(self.times) <= 0):
            raise ValueError("times must be strictly ascending")
        if np.any(self.weights < 0) or np.any(self.weights > 1):
            raise ValueError("weights must lie in [0, 1]")

    def __len__(self) -> int:
        return len(self.times)


@runtime_checkable
class ConditionProvider(Protocol):
    """Mono audio -> :class:`ConditionTrack` in a given text space.

    Attributes:
        name: for messages, e.g. ``"tpos:path/enc.safetensors"`` or ``"tpos:random"``.
        random_weights: True when the weights are random (a speed test, not a picture).
        sample_rate: mono audio at this rate goes in.
        embed_dim: width of the conditions it makes; must equal the text space's width.
    """

    name: str
    random_weights: bool
    sample_rate: int
    embed_dim: int

    def encode(self, mono: np.ndarray, text_space: TextSpace) -> ConditionTrack:
        """Encode a whole mono signal. Raises UserError when ``text_space.dim != embed_dim``."""
        ...


def checked_mono(mono: np.ndarray) -> np.ndarray:
    """Mono audio as float64, refusing what no provider can encode (empty, NaN/Inf, not 1-D)."""
    audio = np.asarray(mono)
    if audio.ndim != 1:
        raise ValueError(f"expected mono audio (one dimension), got shape {audio.shape}")
    if len(audio) == 0:
        raise UserError("the audio is empty: give audio with at least one sample")
    if not np.isfinite(audio).all():
        raise UserError("the audio contains NaN or infinite samples: decode it again or give another file")
    return audio.astype(np.float64, copy=False)
