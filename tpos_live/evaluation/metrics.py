"""The network metrics: collectors that see each frame once (keeping features, never frames) and the
scores computed from what they kept.

- :class:`SampledFrames`: every k-th frame through a model, in batches: CLIP image embeddings
  (clip-text, clip-audio) or classifier probabilities (is);
- :class:`ClipFeatures`: consecutive frames in clips of the video network's length, one feature per
  clip (fvd);
- :func:`inception_score`, :func:`frechet_distance`, :func:`cosine_mean`, :func:`tpos_audio_embeddings`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from tpos_live.evaluation.networks import NetworkKind, model_input

BATCH = 16


class SampledFrames:
    """Runs ``embed`` on every ``every``-th frame (from frame 0), in batches; keeps only its outputs."""

    def __init__(self, embed: Callable[[torch.Tensor], torch.Tensor], kind: NetworkKind, size: int, every: int,
                 device: str) -> None:
        self.embed, self.kind, self.size, self.every, self.device = embed, kind, size, max(1, every), device
        self.indices: list[int] = []
        self._pending: list[torch.Tensor] = []
        self._outputs: list[torch.Tensor] = []

    def add(self, index: int, rgb: np.ndarray) -> None:
        if index % self.every:
            return
        self.indices.append(index)
        self._pending.append(model_input(torch.from_numpy(rgb)[None].to(self.device), self.size, self.kind))
        if len(self._pending) == BATCH:
            self._run()

    def _run(self) -> None:
        if self._pending:
            with torch.inference_mode():
                self._outputs.append(self.embed(torch.cat(self._pending)).float().cpu())
            self._pending = []

    def outputs(self) -> torch.Tensor:
        self._run()
        if not self._outputs:
            return torch.zeros(0)
        return torch.cat(self._outputs)


class ClipFeatures:
    """One feature per run of ``length`` consecutive frames (non-overlapping, a short tail dropped)."""

    def __init__(self, embed: Callable[[torch.Tensor], torch.Tensor], kind: NetworkKind, size: int, length: int,
                 device: str) -> None:
        self.embed, self.kind, self.size, self.length, self.device = embed, kind, size, length, device
        self._clip: list[torch.Tensor] = []
        self._features: list[torch.Tensor] = []

    def add(self, index: int, rgb: np.ndarray) -> None:
        self._clip.append(model_input(torch.from_numpy(rgb)[None].to(self.device), self.size, self.kind)[0])
        if len(self._clip) == self.length:
            with torch.inference_mode():
                self._features.append(self.embed(torch.stack(self._clip)[None]).float().cpu())
            self._clip = []

    def features(self) -> np.ndarray:
        if not self._features:
            return np.zeros((0, 0))
        return torch.cat(self._features).double().numpy()


def clip_image_features(model, pixels: torch.Tensor) -> torch.Tensor:
    """(B, P) CLIP image embeddings: the vision tower's pooled output through its projection (CLIP's
    ``encode_image``; spelled out because ``get_image_features`` changed its return type across versions)."""
    return model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)


def clip_text_features(model, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, P) CLIP text embeddings (``encode_text``): the end token's output through the projection."""
    return model.text_projection(model.text_model(input_ids=input_ids).pooler_output)


def videomae_features(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """(B, T, 3, H, W) -> (B, D): the mean of VideoMAE's last hidden states (its own pooling for
    classification, without the head)."""
    def embed(clips: torch.Tensor) -> torch.Tensor:
        return model(pixel_values=clips).last_hidden_state.mean(dim=1)

    return embed


def inception_score(probabilities: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) per split of the samples, and the mean and standard deviation over
    the splits (Salimans et al. 2016; 10 splits as their code)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError("need a (N, classes) array of probabilities with N > 0")
    splits = max(1, min(splits, len(p)))
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(marginal + 1e-12))).sum(axis=1)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two (N, D) feature sets (Heusel et al.
    2017; Unterthiner et al. 2018 for videos). The trace of the root comes from the eigenvalues of
    S_a^(1/2) S_b S_a^(1/2), which are real and non-negative (no complex sqrtm needed)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the Frechet distance needs at least 2 samples per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrt_psd(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def cosine_mean(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation of the row-wise cosine similarity of (N, D) ``a`` and ``b`` (or (1, D))."""
    cos = F.cosine_similarity(a.float(), b.float(), dim=-1)
    return float(cos.mean()), float(cos.std(unbiased=False))


@torch.inference_mode()
def tpos_audio_embeddings(provider, mono: np.ndarray, times: np.ndarray) -> torch.Tensor:
    """(T, D) the TPoS encoder's s_N, the vector its InfoNCE term aligns with CLIP's text embedding (paper
    eq. (1)), for the window whose newest segment is centred at each time (as the renderer's grid)."""
    config = provider.config
    length, count = config.segment_samples, config.segments
    ends = np.round(np.asarray(times) * provider.sample_rate + length / 2).astype(np.int64)
    starts = ends[:, None] - length * np.arange(count, 0, -1)[None, :]  # oldest segment first
    pad = max(0, -int(starts.min()))
    right = max(0, int(starts.max()) + length - len(mono))
    padded = np.concatenate([np.zeros(pad, np.float32), np.asarray(mono, np.float32), np.zeros(right, np.float32)])
    out = []
    for first in range(0, len(starts), BATCH):
        block = starts[first:first + BATCH] + pad
        segments = np.stack([padded[s:s + length] for s in block.reshape(-1)])
        features = provider.segment_features(segments).reshape(len(block), count, -1)
        out.append(provider.encoder.temporal(features).last.float().cpu())
    return torch.cat(out)
