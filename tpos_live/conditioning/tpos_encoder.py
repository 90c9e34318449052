"""The TPoS audio encoder (paper section 3.2) for inference, and the provider that runs it over a file.

Architecture and sizes follow the official code (ku-vai/TPoS). With D = ``embed_dim`` (768 for SD 1.x)
and N = ``segments`` (5):

- per segment: ``input_conv`` = Conv2d(1 -> 3, 3x3, no padding, as in the official code), then
  ``backbone`` = ResNet-18 with timm's key names and ``num_classes = D``: one vector w_n per segment;
- ``lstm`` = LSTM(D, D, 1 layer, batch_first) over w_1..w_N; its outputs s_n are L2-normalised;
- ``attention`` = Conv1d(D -> 1, kernel 1) scores each s_n; softmax over the N segments gives alpha_n;
- MAP (:class:`MappingModule`, a separate module as in the official code, where it is a separate
  checkpoint): ``linear1`` D -> 10 D, GELU, Dropout(0.2), ``linear2`` 10 D -> 76 D, GELU, Dropout(0.2),
  reshaped to (76, D): the tokens that follow the start token in the text encoder's output.
- condition of segment n: MAP(N * alpha_n * s_n) (the paper's k = 1).

State-dict names here, and the official names they come from (``audio_encoder_23.pth``, class
``Audio_Encoder``; ``map_model_23.pth``, class ``Mapping_Model``)::

    TPoSAudioEncoder.input_conv.*   <- conv.*
    TPoSAudioEncoder.backbone.*     <- feature_extractor.*   (timm resnet18 keys, unchanged below)
    TPoSAudioEncoder.lstm.*         <- lstm.*                (weight_ih_l0, weight_hh_l0, bias_*_l0)
    TPoSAudioEncoder.attention.*    <- cnn.*
    MappingModule.linear1/linear2.* <- linear1/linear2.*

(Read from a public copy of the official model code, not checked against the released files.) The
official encoder class also defines layers its forward pass never uses (``T_A``, ``T_A2``, ``conv2``),
so its file likely holds them, and the official loader strips DataParallel's ``module.`` prefix; an
importer drops both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tpos_live.audio.spectrogram import SpectrogramConfig, segment_map, segment_samples
from tpos_live.conditioning.base import TEXT_TOKENS, ConditionTrack, TextSpace, checked_mono
from tpos_live.conditioning.resnet import ResNet18
from tpos_live.errors import UserError
from tpos_live.limits import BACKBONE_WIDTH_RANGE, OFFICIAL_BACKBONE_WIDTH
from tpos_live.names import CLIP_L14_FAMILY, MAP_OUTPUTS, OFFICIAL_MAP_OUTPUT

MAP_HIDDEN_MULT = 10  # official: (77 - 1) // 7 = 10 times the width in the hidden layer


def _default_spectrogram() -> SpectrogramConfig:
    return SpectrogramConfig(kind="stft")


@dataclass(frozen=True)
class TPoSConfig:
    """Sizes of a TPoS encoder, its front end, and how a file is cut into windows.

    Attributes:
        embed_dim: width D of the audio vectors and of the conditions (768 for SD 1.x, 1024 for SD 2.x).
        map_tokens: tokens MAP makes; 76, so that with the start token a condition has 77.
        segments: N, segments per encoder window; must equal ``spectrogram.segments``.
        spectrogram: the front end (default: the official inference's linear STFT map, ``"stft"``, with
            the floor of a config that names none, ``"absolute"``; ``import-tpos`` records ``"official"``).
        text_family: the text encoder the encoder was aligned to (see ``TextSpace.family``).
        hop_seconds: time between consecutive conditions of a file; None = one segment. The hop in
            samples must divide the segment length, so that windows share their segments.
        backbone_width: the per-segment ResNet-18's first-stage channels (the official 64; narrower,
            down to 8, for a small world: the same layers with fewer channels).
        map_output: MAP's output, one of ``MAP_OUTPUTS``: ``"gelu"`` (the official: dropout, then GELU) or
            ``"linear"`` (neither, so that MAP can reach tokens below GELU's minimum of -0.17, and a
            regression trained under dropout does not shrink to 0.8 of its targets).
    """

    embed_dim: int = 768
    map_tokens: int = TEXT_TOKENS - 1
    segments: int = 5
    spectrogram: SpectrogramConfig = field(default_factory=_default_spectrogram)
    text_family: str = CLIP_L14_FAMILY
    hop_seconds: float | None = None
    backbone_width: int = OFFICIAL_BACKBONE_WIDTH
    map_output: str = OFFICIAL_MAP_OUTPUT

    def __post_init__(self) -> None:
        if self.map_output not in MAP_OUTPUTS:
            raise ValueError(f"map_output must be one of {', '.join(MAP_OUTPUTS)}, got {self.map_output!r}")
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be at least 1, got {self.embed_dim}")
        low, high = BACKBONE_WIDTH_RANGE
        if not low <= self.backbone_width <= high:
            raise ValueError(f"backbone_width must be in {low}..{high} (official: {OFFICIAL_BACKBONE_WIDTH}), "
                             f"got {self.backbone_width}")
        if self.map_tokens != TEXT_TOKENS - 1:
            raise ValueError(
                f"map_tokens must be {TEXT_TOKENS - 1} (a condition is the start token plus the MAP "
                f"tokens, {TEXT_TOKENS} in all), got {self.map_tokens}"
            )
        if self.segments != self.spectrogram.segments:
            raise ValueError(
                f"segments ({self.segments}) must equal spectrogram.segments ({self.spectrogram.segments})"
            )
        if not self.text_family:
            raise ValueError("text_family must name the text encoder the encoder was aligned to")
        if self.hop_seconds is not None:
            if not self.hop_seconds > 0:
                raise ValueError(f"hop_seconds must be positive, got {self.hop_seconds}")
            length = self.segment_samples
            if length % self.hop_samples != 0:
                raise ValueError(
                    f"hop_seconds={self.hop_seconds} gives a hop of {self.hop_samples} samples, which does "
                    f"not divide the segment length of {length} samples: use segment length / k for a whole "
                    f"number k (e.g. {length / self.spectrogram.sample_rate / 2:.6f} s for k = 2)"
                )

    @property
    def segment_samples(self) -> int:
        """Samples per segment, L (see :func:`tpos_live.audio.spectrogram.segment_samples`)."""
        return segment_samples(self.spectrogram)

    @property
    def hop_samples(self) -> int:
        """Samples between consecutive windows of a file, H (divides L)."""
        if self.hop_seconds is None:
            return self.segment_samples
        return max(1, round(self.hop_seconds * self.spectrogram.sample_rate))


class EncoderOutput(NamedTuple):
    """What the encoder returns for B windows of N segments."""

    last: torch.Tensor  # (B, D): s_N, the last LSTM output (unit norm)
    sequence: torch.Tensor  # (B, N, D): s_1..s_N, each unit norm
    weights: torch.Tensor  # (B, N): alpha_1..alpha_N, softmax over the segments


class TPoSAudioEncoder(nn.Module):
    """Segments' spectrogram maps -> unit vectors s_1..s_N and attention weights alpha_1..alpha_N.

    The per-segment CNN (:meth:`segment_features`) and the temporal part (:meth:`temporal`) can run
    separately, so a caller can compute each segment's feature once and reuse it in every window.
    Unlike the official forward pass, :meth:`temporal` returns the plain sequence s; the official
    "weighted sequence" is ``weights[..., None] * sequence``.
    """

    def __init__(self, embed_dim: int = 768, segments: int = 5, backbone_width: int = OFFICIAL_BACKBONE_WIDTH) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.segments = segments
        # No padding: the official layer is Conv2d(1, 3, (3, 3)), so a 128 x 153 map enters the
        # ResNet as 126 x 151. Padding would change every feature the official weights compute.
        self.input_conv = nn.Conv2d(1, 3, kernel_size=3)
        self.backbone = ResNet18(num_classes=embed_dim, width=backbone_width)
        self.lstm = nn.LSTM(embed_dim, embed_dim, num_layers=1, batch_first=True)
        self.attention = nn.Conv1d(embed_dim, 1, kernel_size=1)

    def segment_features(self, maps: torch.Tensor) -> torch.Tensor:
        """``(M, 1, H, W)`` segment maps -> ``(M, D)`` features w (the shared per-segment CNN)."""
        if maps.ndim != 4 or maps.shape[1] != 1:
            raise ValueError(f"expected maps of shape (M, 1, H, W), got {tuple(maps.shape)}")
        return self.backbone(self.input_conv(maps))

    def temporal(self, features: torch.Tensor) -> EncoderOutput:
        """``(B, N, D)`` segment features, oldest first -> :class:`EncoderOutput`."""
        if features.ndim != 3 or features.shape[1:] != (self.segments, self.embed_dim):
            raise ValueError(
                f"expected features of shape (B, {self.segments}, {self.embed_dim}), "
                f"got {tuple(features.shape)}"
            )
        outputs, _ = self.lstm(features)  # zero initial state, as in the official code
        sequence = F.normalize(outputs, dim=-1)
        logits = self.attention(sequence.transpose(1, 2)).squeeze(1)  # (B, N)
        weights = logits.softmax(dim=1)
        return EncoderOutput(last=sequence[:, -1], sequence=sequence, weights=weights)

    def forward(self, maps: torch.Tensor) -> EncoderOutput:
        """``(B, N, H, W)`` maps of N consecutive segments, oldest first -> :class:`EncoderOutput`."""
        if maps.ndim != 4:
            raise ValueError(f"expected maps of shape (B, N, H, W), got {tuple(maps.shape)}")
        batch, segments, height, width = maps.shape
        features = self.segment_features(maps.reshape(batch * segments, 1, height, width))
        return self.temporal(features.reshape(batch, segments, -1))


class MappingModule(nn.Module):
    """MAP: an audio vector ``(B, D)`` -> ``(B, map_tokens, D)`` tokens in the text encoder's space.

    The official forward applies dropout before each GELU; in eval mode (dropout off) the order does
    not matter, and we keep the official one so that training matches too. ``output`` (one of
    ``MAP_OUTPUTS``) is the official GELU with dropout before it, or "linear": a plain regression
    head, no activation and no dropout on the tokens. Dropout there, trained with MSE, makes eval
    outputs the best guess under a random 20 % of them zeroed: 0.8 times the targets (the mini
    world's MAP measured 1/1.23 of its targets, and 0.049 MSE where 0.020 was left after rescaling).
    """

    def __init__(self, embed_dim: int = 768, map_tokens: int = TEXT_TOKENS - 1,
                 output: str = OFFICIAL_MAP_OUTPUT) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.map_tokens = map_tokens
        self.linear1 = nn.Linear(embed_dim, MAP_HIDDEN_MULT * embed_dim)
        self.linear2 = nn.Linear(MAP_HIDDEN_MULT * embed_dim, map_tokens * embed_dim)
        self.act = nn.GELU()
        if output not in MAP_OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(MAP_OUTPUTS)}, got {output!r}")
        self.drops_output = output == OFFICIAL_MAP_OUTPUT
        self.out = nn.GELU() if self.drops_output else nn.Identity()
        self.drop = nn.Dropout(0.2)  # one module for both places: training swaps it for a global-batch one

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.drop(self.linear1(x)))
        x = self.linear2(x)
        x = self.out(self.drop(x) if self.drops_output else x)
        return x.reshape(x.shape[0], self.map_tokens, self.embed_dim)


def condition_vectors(output: EncoderOutput, scale: float | None = None) -> torch.Tensor:
    """``(B, N, D)``: N * alpha_n * s_n, the MAP input that makes segment n's condition (k = 1); with
    ``scale``, scale * alpha_n * s_n (the official img2img uses 20)."""
    factor = output.weights.shape[1] if scale is None else scale
    return factor * output.weights.unsqueeze(-1) * output.sequence


def build_tpos_modules(config: TPoSConfig) -> tuple[TPoSAudioEncoder, MappingModule]:
    """A freshly initialised encoder and MAP of ``config``'s sizes (on the current default device)."""
    encoder = TPoSAudioEncoder(config.embed_dim, config.segments, config.backbone_width)
    map_model = MappingModule(config.embed_dim, config.map_tokens, config.map_output)
    return encoder, map_model


class TPoSProvider:
    """Runs a TPoS encoder over audio: a :class:`~tpos_live.conditioning.base.ConditionProvider`.

    A file is cut into windows on a fixed grid. With segment length L and hop H (H divides L), window
    j ends at sample ``e_j = j * H + L`` and consists of the N segments of length L that end at e_j;
    audio before sample 0 and after the end is silence. Windows run while their newest segment starts
    inside the audio. Window j gives one condition, its newest segment's MAP(N * alpha_N * s_N), at the
    centre of that segment, ``(e_j - L / 2) / sr``, with weight alpha_N. Each distinct segment's CNN
    feature is computed once, in batches. These are the sliding windows, which live needs; the official
    code's windows are :func:`tpos_live.conditioning.windows.official_windows`.
    """

    def __init__(
        self,
        encoder: TPoSAudioEncoder,
        map_model: MappingModule,
        config: TPoSConfig,
        *,
        name: str,
        random_weights: bool,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> None:
        if encoder.embed_dim != config.embed_dim or map_model.embed_dim != config.embed_dim:
            raise ValueError("encoder, MAP and config disagree on embed_dim")
        self.config = config
        self.device = torch.device(device)
        self.encoder = encoder.to(self.device).eval()
        self.map_model = map_model.to(self.device).eval()
        self.name = name
        self.random_weights = random_weights
        self.sample_rate = config.spectrogram.sample_rate
        self.embed_dim = config.embed_dim
        self.text_family = config.text_family  # the text encoder it was aligned to
        self.batch_size = batch_size

    def check_compatible(self, text_space: TextSpace) -> None:
        """Raise UserError unless this encoder's conditions have the text space's width.

        A different text family of the same width is not refused here: the caller decides how to say
        that (the conditions would be well-formed but mean little to that model)."""
        if self.embed_dim != text_space.dim:
            raise UserError(
                f"audio encoder '{self.name}' makes {self.embed_dim}-wide conditions but the diffusion "
                f"model's text encoder ({text_space.family}) is {text_space.dim} wide: use an encoder "
                f"trained for {text_space.family} (tpos-live train-encoder) or a model whose text encoder "
                f"is {self.embed_dim} wide (the encoder was aligned to {self.config.text_family})"
            )

    @torch.inference_mode()
    def segment_features(self, segments: np.ndarray) -> torch.Tensor:
        """``(M, L)`` segments' audio -> ``(M, D)`` CNN features on the provider's device (each map from
        its segment alone: the official floor takes the segment's own peak)."""
        maps = np.stack([segment_map(segment, self.config.spectrogram) for segment in segments])
        return self.map_features(torch.from_numpy(maps).unsqueeze(1))

    @torch.inference_mode()
    def map_features(self, maps: torch.Tensor) -> torch.Tensor:
        """``(M, 1, H, W)`` segment maps -> ``(M, D)`` CNN features on the provider's device, in batches."""
        chunks = [
            self.encoder.segment_features(maps[start : start + self.batch_size].to(self.device))
            for start in range(0, len(maps), self.batch_size)
        ]
        return torch.cat(chunks)

    @torch.inference_mode()
    def window_tokens(self, features: torch.Tensor,
                      condition_scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, N, D)`` features of B windows -> the newest segment's MAP tokens ``(B, 76, D)`` and its
        attention weight alpha_N ``(B,)`` (``condition_scale``: see :func:`condition_vectors`)."""
        output = self.encoder.temporal(features.to(self.device))
        newest = condition_vectors(output, condition_scale)[:, -1]
        return self.map_model(newest), output.weights[:, -1]

    def encode(self, mono: np.ndarray, text_space: TextSpace,
               condition_scale: float | None = None) -> ConditionTrack:
        """Encode a whole mono signal at ``sample_rate`` (see the class docstring for the grid; for the
        official windows, :func:`tpos_live.conditioning.windows.official_windows`)."""
        self.check_compatible(text_space)
        audio = checked_mono(mono)
        length = self.config.segment_samples
        segment_starts = self._segment_starts(len(audio))  # (K, N), oldest first
        # Every segment that ends at or before sample 0 is the same silence: one key for all of them.
        keys = np.maximum(segment_starts, -length)
        unique_keys, index = np.unique(keys, return_inverse=True)
        features = self._features_at(audio, unique_keys)
        window_features = features[torch.from_numpy(index.reshape(keys.shape)).to(features.device)]
        batches = [
            self.window_tokens(window_features[start : start + self.batch_size], condition_scale)
            for start in range(0, len(window_features), self.batch_size)
        ]
        tokens = torch.cat([batch_tokens for batch_tokens, _ in batches])
        weights = torch.cat([batch_weights for _, batch_weights in batches])
        return ConditionTrack(
            times=(segment_starts[:, -1] + length / 2) / self.sample_rate,
            conditions=text_space.with_start_token(tokens),
            weights=weights.cpu().double().numpy(),
        )

    def _segment_starts(self, n_samples: int) -> np.ndarray:
        """``(K, N)`` start samples of each window's segments; window j's newest starts at j * H."""
        length, hop = self.config.segment_samples, self.config.hop_samples
        n_windows = math.ceil(n_samples / hop)
        newest = np.arange(n_windows, dtype=np.int64) * hop
        offsets = length * np.arange(self.config.segments - 1, -1, -1, dtype=np.int64)
        return newest[:, None] - offsets[None, :]

    def _features_at(self, audio: np.ndarray, starts: np.ndarray) -> torch.Tensor:
        """CNN features of the segments starting at ``starts`` (silence outside the audio), cut and run
        one batch at a time so that a long file never holds all its segments' samples at once."""
        length = self.config.segment_samples
        offset = max(0, -int(starts.min()))
        right = max(0, int(starts.max()) + length - len(audio))
        padded = np.concatenate([np.zeros(offset), audio, np.zeros(right)])
        features = []
        for start in range(0, len(starts), self.batch_size):
            batch = starts[start : start + self.batch_size] + offset
            features.append(self.segment_features(np.stack([padded[s : s + length] for s in batch])))
        return torch.cat(features)


