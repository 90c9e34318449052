"""Training losses of the TPoS audio encoder (paper section 3.2, equations (1)-(5)) and SpecAugment.

With s_N the last LSTM output, o = sum_n alpha_n s_n the attention-pooled vector, t the text embedding
of the clip's label (CLIP's projected embedding by default, or the pooled output: see
:mod:`tpos_live.training.targets`), s'_N the last output for a SpecAugment view of the same clip and
c_t the text encoder's token outputs after the start token::

    L = [ nce(s_N, t) + 0.6 * nce(s_N, s'_N) ] + nce(o, t) + mse(MAP(o), c_t)
          (1) L_clip^{a<->t}  (3) L_clip^{a<->a'}  (4) L_temporal  L_cond        = (5)

where ``nce(a, b) = l_sim(a, b) + l_sim(b, a)``, l_sim being InfoNCE over the batch on cosine similarity
divided by the temperature 0.07 (a logit scale of 1 / 0.07 ~ 14.3). Two defects of the official code
are not copied (docs/design.md, "The official code"): it scales logits by exp(0.07) ~ 1.07 and
contrasts the augmented view with itself. The weights and the masks are settings of
:mod:`tpos_live.training.recipe`.

When two clips of a batch share a label their text embeddings are equal. Plain InfoNCE then counts the
other clip's (identical) text as a negative; summed over both directions this equals InfoNCE with both
as positives, so no special case is needed (the class-balanced sampler avoids such pairs anyway).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from tpos_live.conditioning.tpos_encoder import EncoderOutput
from tpos_live.training.recipe import AUGMENT_WEIGHT, TEMPERATURE, SpecAugmentConfig

TERM_NAMES = ("text_last", "augment", "text_pooled", "map")


def spec_augment(maps: torch.Tensor, config: SpecAugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """``(B, N, H, W)`` segment maps -> a masked copy; every segment gets masks of its own.

    The draws come from ``generator`` (a CPU generator) alone, so a seed fixes the result on any device.
    """
    if maps.ndim != 4:
        raise ValueError(f"expected maps of shape (B, N, H, W), got {tuple(maps.shape)}")
    masked = spec_augment_masks(tuple(maps.shape), config, generator)
    return maps.masked_fill(masked.to(maps.device), config.fill)


def spec_augment_masks(
    shape: tuple[int, ...], config: SpecAugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """``(B, N, H, W)`` bool: where segment maps of ``shape`` get masked (True), drawn in the order of
    :func:`spec_augment` (a process takes the rows of its share from the masks of the global batch)."""
    batch, segments, height, width = shape
    rows = batch * segments
    freq = _bands(rows, height, config.freq_masks, int(config.max_freq_fraction * height), generator)
    time = _bands(rows, width, config.time_masks, int(config.max_time_fraction * width), generator)
    return (freq[:, :, None] | time[:, None, :]).reshape(batch, segments, height, width)


def _bands(rows: int, size: int, count: int, max_width: int, generator: torch.Generator) -> torch.Tensor:
    """``(rows, size)`` bool: the union of ``count`` random bands of width 0..max_width in each row."""
    if count == 0 or max_width == 0:
        return torch.zeros(rows, size, dtype=torch.bool)
    widths = torch.randint(0, max_width + 1, (rows, count), generator=generator)
    starts = (torch.rand(rows, count, generator=generator) * (size - widths + 1)).long()
    positions = torch.arange(size)
    inside = (positions >= starts[..., None]) & (positions < (starts + widths)[..., None])
    return inside.any(dim=1)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Symmetric InfoNCE ``l_sim(a, b) + l_sim(b, a)`` (eqs. (1)-(4)): row i of ``a`` and row i of ``b``
    are the positive pair, the other rows of the batch the negatives. Cosine similarity / temperature."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"expected two (B, D) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    logits = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / temperature
    targets = torch.arange(len(a), device=a.device)
    return F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)


def attention_pooled(output: EncoderOutput) -> torch.Tensor:
    """``(B, D)``: o = sum_n alpha_n s_n, the vector the TAM term and MAP are trained on."""
    return (output.weights.unsqueeze(-1) * output.sequence).sum(dim=1)


class LossTerms(NamedTuple):
    """The loss terms of one batch (scalars). ``augment`` is unweighted; ``total`` weights it."""

    text_last: torch.Tensor  # eq. (1): s_N vs the label's text
    augment: torch.Tensor  # eq. (3): s_N vs s'_N of the SpecAugment view
    text_pooled: torch.Tensor  # eq. (4): o vs the label's text
    map: torch.Tensor  # L_cond: MSE of MAP(o) against the token outputs after the start token
    total: torch.Tensor  # eq. (5)

    def as_floats(self) -> dict[str, float]:
        return {name: float(value.detach()) for name, value in self._asdict().items()}


def tpos_loss(
    output: EncoderOutput,
    augmented: EncoderOutput,
    map_tokens: torch.Tensor,
    text: torch.Tensor,
    text_tokens: torch.Tensor,
    *,
    temperature: float = TEMPERATURE,
    augment_weight: float = AUGMENT_WEIGHT,
) -> LossTerms:
    """Equation (5) for a batch.

    The InfoNCE terms are over the B clips of ``output``, ``augmented`` and ``text``; the MSE is the mean
    over the clips of ``map_tokens`` and ``text_tokens``, which may be a share of them (a process's part
    of a global batch, :mod:`tpos_live.training.distributed`).

    Args:
        output: the encoder's output for the original maps.
        augmented: its output for the SpecAugment view of the same maps.
        map_tokens: ``(b, 76, D)`` MAP(o) for the original maps.
        text: ``(B, D)`` text embedding of each clip's label (the contrastive target).
        text_tokens: ``(b, 76, D)`` text encoder outputs of each clip's label, start token excluded.
    """
    pooled = attention_pooled(output)
    text_last = info_nce(output.last, text, temperature)
    augment = info_nce(output.last, augmented.last, temperature)
    text_attended = info_nce(pooled, text, temperature)
    map_loss = F.mse_loss(map_tokens.float(), text_tokens.float())
    total = text_last + augment_weight * augment + text_attended + map_loss
    return LossTerms(text_last, augment, text_attended, map_loss, total)


def retrieval_accuracy(
    audio: torch.Tensor, class_text: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[int, float]:
    """Audio-to-text retrieval: the fraction of clips whose label's text is among the k texts most
    similar (cosine) to the clip's audio vector, over all C class texts. Chance is k / C."""
    similarity = F.normalize(audio.float(), dim=-1) @ F.normalize(class_text.float(), dim=-1).T
    # Rank of the true class = how many classes score strictly higher than it.
    true_score = similarity.gather(1, labels.view(-1, 1))
    rank = (similarity > true_score).sum(dim=1)
    return {k: float((rank < k).float().mean()) for k in ks}
