"""Streaming conditions: the window ending now, recomputed each hop, with each segment's features cached.

Every streamable provider cuts audio on one grid, the TPoS provider's: segment length L, hop H and N
segments per window. Window j's newest segment starts at sample ``j * H``; its N segments start at
``j * H - m * L`` (m = N - 1 .. 0), so it ends at ``j * H + L``. Its condition is stamped at the centre
of its newest segment, ``(j * H + L / 2) / sr``. Audio before sample 0 is silence. With N > 1, H divides
L, so consecutive windows share segments: each segment's features (TPoS: the CNN feature w_n; CLAP: the
audio embedding) are computed once and cached by the segment's start sample.

A whole file (:func:`encode_on_grid`) gives the windows whose newest segment starts inside the audio,
with silence after its end. A stream (:class:`StreamingConditioner`) computes each window as soon as
its last sample arrives, and :meth:`StreamingConditioner.flush` pads the end with silence to finish the
same windows; so a file streamed block by block gives the whole-file conditions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

from tpos_live.conditioning.base import ConditionProvider, ConditionTrack, TextSpace, checked_mono
from tpos_live.conditioning.tpos_encoder import TPoSProvider


@dataclass(frozen=True)
class SegmentGrid:
    """Where segments and windows lie in a signal (see the module docstring), in samples."""

    segment_samples: int  # L
    hop_samples: int  # H
    window_segments: int  # N
    sample_rate: int

    def __post_init__(self) -> None:
        for name in ("segment_samples", "hop_samples", "window_segments", "sample_rate"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.window_segments > 1 and self.segment_samples % self.hop_samples:
            raise ValueError(f"with {self.window_segments} segments per window the hop ({self.hop_samples}) "
                             f"must divide the segment length ({self.segment_samples}), so that windows "
                             f"share segments")

    def windows_in(self, n_samples: int) -> int:
        """Windows whose newest segment starts inside the first ``n_samples`` (a whole file's windows)."""
        return -(-n_samples // self.hop_samples)

    def windows_complete(self, n_samples: int) -> int:
        """Windows whose last sample is among the first ``n_samples`` (what a stream can compute)."""
        if n_samples < self.segment_samples:
            return 0
        return (n_samples - self.segment_samples) // self.hop_samples + 1

    def segment_starts(self, windows: np.ndarray) -> np.ndarray:
        """``(B, N)`` start samples of the windows' segments, oldest first."""
        offsets = self.segment_samples * np.arange(self.window_segments - 1, -1, -1, dtype=np.int64)
        return np.asarray(windows, dtype=np.int64)[:, None] * self.hop_samples - offsets[None, :]

    def cache_keys(self, starts: np.ndarray) -> np.ndarray:
        """Segment starts as cache keys: every segment that ends by sample 0 is the same silence."""
        return np.maximum(starts, -self.segment_samples)

    def times(self, windows: np.ndarray) -> np.ndarray:
        """Seconds at which the windows' conditions are stamped: the centre of their newest segment."""
        newest = np.asarray(windows, dtype=np.int64) * self.hop_samples
        return (newest + self.segment_samples / 2) / self.sample_rate

    def oldest_start(self, window: int) -> int:
        """Start sample of the oldest segment of ``window`` (nothing before it is needed from then on)."""
        return window * self.hop_samples - (self.window_segments - 1) * self.segment_samples


@runtime_checkable
class StreamableProvider(Protocol):
    """A provider split at its segments, so that a stream computes each segment once.

    ``segment_features`` maps ``(M, L)`` float64 segments to ``(M, F)`` features; ``window_conditions``
    maps the ``(B, N, F)`` features of B windows to their ``(B, 77, D)`` float32 conditions (on the text
    space's device) and ``(B,)`` weights in [0, 1].
    """

    name: str
    sample_rate: int
    grid: SegmentGrid

    def check_compatible(self, text_space: TextSpace) -> None: ...

    def segment_features(self, segments: np.ndarray) -> torch.Tensor: ...

    def window_conditions(self, features: torch.Tensor,
                          text_space: TextSpace) -> tuple[torch.Tensor, torch.Tensor]: ...


class TPoSStreaming:
    """A :class:`TPoSProvider` as a :class:`StreamableProvider`: its CNN features per segment, then its
    LSTM, attention and MAP per window, on the grid of its own ``encode`` or one of hop ``hop_samples``
    (which must divide the segment length: see :func:`nearest_hop`)."""

    def __init__(self, provider: TPoSProvider, hop_samples: int | None = None) -> None:
        self.provider = provider
        self.name = provider.name
        self.sample_rate = provider.sample_rate
        config = provider.config
        self.grid = SegmentGrid(config.segment_samples, hop_samples or config.hop_samples, config.segments,
                                provider.sample_rate)

    def check_compatible(self, text_space: TextSpace) -> None:
        self.provider.check_compatible(text_space)

    def segment_features(self, segments: np.ndarray) -> torch.Tensor:
        return self.provider.segment_features(segments)

    def window_conditions(self, features: torch.Tensor,
                          text_space: TextSpace) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, alpha = self.provider.window_tokens(features)
        return text_space.with_start_token(tokens), alpha


def nearest_hop(segment_samples: int, wanted: int) -> int:
    """The divisor of ``segment_samples`` nearest ``wanted`` (the hop of a grid whose windows share
    segments); 78,848 samples and a quarter second at 44.1 kHz give 11,264 (0.255 s)."""
    wanted = min(max(wanted, 1), segment_samples)
    divisors = {d for k in range(1, math.isqrt(segment_samples) + 1) if segment_samples % k == 0
                for d in (k, segment_samples // k)}
    return min(divisors, key=lambda d: (abs(d - wanted), d))


def as_streamable(provider: ConditionProvider | StreamableProvider,
                  hop_seconds: float | None = None) -> StreamableProvider:
    """``provider`` itself when it streams (on its own grid), or a :class:`TPoSStreaming` view of a TPoS
    provider (with ``hop_seconds``: the nearest hop that divides its segment; else its own); else
    TypeError."""
    if isinstance(provider, StreamableProvider):
        return provider
    if isinstance(provider, TPoSProvider):
        hop = None
        if hop_seconds is not None:
            hop = nearest_hop(provider.config.segment_samples, round(hop_seconds * provider.sample_rate))
        return TPoSStreaming(provider, hop)
    raise TypeError(f"provider {getattr(provider, 'name', provider)!r} cannot stream: it implements neither "
                    f"StreamableProvider nor is it a TPoSProvider")


class StreamedCondition(NamedTuple):
    """One window's condition, as a stream produces it."""

    window: int  # j: its newest segment starts at j * H
    time: float  # seconds since the stream's first sample (the centre of the newest segment)
    end_sample: int  # the window's last sample + 1, counted from the stream's first sample
    condition: torch.Tensor  # (77, D) float32
    weight: float  # in [0, 1]


class StreamingConditioner:
    """Conditions of a live stream: one window per hop, computed when its last sample arrives.

    Push consecutive mono blocks at the provider's sample rate; each :meth:`push` returns the conditions
    of the windows its samples completed. Segment features are cached by start sample and dropped once
    no later window needs them; audio is kept only as far back as a later window's oldest segment. So
    memory stays bounded however long the stream runs. Not thread-safe: one thread (the live engine's
    encoder thread) pushes.

    Args:
        provider: a :class:`StreamableProvider` or a :class:`TPoSProvider`.
        text_space: the diffusion model's text space.
        batch_windows: windows computed per batch when a long block completes many at once.
        hop_seconds: for a TPoS provider, the hop of the grid (see :func:`as_streamable`).
    """

    def __init__(self, provider: ConditionProvider | StreamableProvider, text_space: TextSpace,
                 batch_windows: int = 32, hop_seconds: float | None = None) -> None:
        if batch_windows < 1:
            raise ValueError(f"batch_windows must be at least 1, got {batch_windows}")
        self.provider = as_streamable(provider, hop_seconds)
        self.provider.check_compatible(text_space)
        self.text_space = text_space
        self.grid = self.provider.grid
        self.batch_windows = batch_windows
        self._audio = np.zeros(0)  # the samples from _audio_start on
        self._audio_start = 0
        self._received = 0
        self._next_window = 0
        self._features: dict[int, torch.Tensor] = {}
        self._latest: StreamedCondition | None = None
        self._flushed = False

    @property
    def cached_segments(self) -> int:
        """Segments whose features are held for later windows."""
        return len(self._features)

    @property
    def buffered_samples(self) -> int:
        """Samples held for segments not computed yet."""
        return len(self._audio)

    @property
    def samples_to_next_window(self) -> int:
        """How many more samples complete the next window (0: a push would complete it now)."""
        end = self._next_window * self.grid.hop_samples + self.grid.segment_samples
        return max(0, end - self._received)

    def push(self, samples: np.ndarray, latest_only: bool = False) -> list[StreamedCondition]:
        """Append the next mono block; returns the conditions of the windows it completed, oldest first.

        ``latest_only`` computes only the newest completed window (a live engine that fell behind
        skips the stale ones; their segments are still computed when a later window needs them).
        """
        if self._flushed:
            raise RuntimeError("this stream was flushed: start a new StreamingConditioner")
        block = np.asarray(samples, dtype=np.float64)
        if block.ndim != 1:
            raise ValueError(f"expected a mono block (one dimension), got shape {block.shape}")
        if not np.isfinite(block).all():
            raise ValueError("the block contains NaN or infinite samples")
        self._audio = np.concatenate([self._audio, block])
        self._received += len(block)
        return self._run(self.grid.windows_complete(self._received), latest_only)

    def flush(self) -> list[StreamedCondition]:
        """End the stream: pad it with silence and return the remaining windows whose newest segment
        started before its end (the last windows of a whole-file encode)."""
        if self._flushed:
            raise RuntimeError("this stream was flushed already")
        self._flushed = True
        return self._run(self.grid.windows_in(self._received), latest_only=False)

    def latest(self) -> StreamedCondition | None:
        """The newest condition computed so far, or None before the first window completes."""
        return self._latest

    # ---- internals ----------------------------------------------------------------------------------

    def _run(self, stop: int, latest_only: bool) -> list[StreamedCondition]:
        first = max(self._next_window, stop - 1) if latest_only else self._next_window
        results: list[StreamedCondition] = []
        for start in range(first, stop, self.batch_windows):
            results += self._compute(np.arange(start, min(start + self.batch_windows, stop), dtype=np.int64))
        return results

    def _compute(self, windows: np.ndarray) -> list[StreamedCondition]:
        keys = self.grid.cache_keys(self.grid.segment_starts(windows))
        missing = [int(key) for key in np.unique(keys) if int(key) not in self._features]
        if missing:
            features = self.provider.segment_features(np.stack([self._segment(key) for key in missing]))
            # clone: a row view would keep the whole batch's tensor alive in the cache
            self._features.update((key, row.clone()) for key, row in zip(missing, features, strict=True))
        window_features = torch.stack([torch.stack([self._features[int(key)] for key in row])
                                       for row in keys])
        conditions, weights = self.provider.window_conditions(window_features, self.text_space)
        weights = weights.detach().double().cpu().numpy()
        results = [
            StreamedCondition(int(window), float(time), int(window) * self.grid.hop_samples
                              + self.grid.segment_samples, condition, float(weight))
            for window, time, condition, weight in zip(windows, self.grid.times(windows), conditions, weights,
                                                       strict=True)
        ]
        self._next_window = int(windows[-1]) + 1
        self._latest = results[-1]
        self._forget()
        return results

    def _segment(self, start: int) -> np.ndarray:
        """L samples from ``start``: silence before sample 0 and after the samples received."""
        length = self.grid.segment_samples
        segment = np.zeros(length)
        lo, hi = max(start, 0), min(start + length, self._received)
        if hi > lo:
            if lo < self._audio_start:
                raise AssertionError(f"segment at {start} needs samples dropped before {self._audio_start}")
            segment[lo - start : hi - start] = self._audio[lo - self._audio_start : hi - self._audio_start]
        return segment

    def _forget(self) -> None:
        """Drop the features and samples that no window from ``_next_window`` on needs."""
        keep_from = self.grid.oldest_start(self._next_window)
        for key in [key for key in self._features if key < keep_from]:
            del self._features[key]
        cut = min(max(keep_from, 0), self._received)
        if cut > self._audio_start:
            self._audio = self._audio[cut - self._audio_start :]
            self._audio_start = cut


def track_of(conditions: Sequence[StreamedCondition]) -> ConditionTrack:
    """Streamed conditions (ascending windows) as one :class:`ConditionTrack`."""
    return ConditionTrack(
        times=np.array([item.time for item in conditions], dtype=np.float64),
        conditions=torch.stack([item.condition for item in conditions]),
        weights=np.array([item.weight for item in conditions], dtype=np.float64),
    )


def encode_on_grid(provider: StreamableProvider, mono: np.ndarray, text_space: TextSpace,
                   batch_windows: int = 32) -> ConditionTrack:
    """A whole mono signal's conditions: the signal streamed in one block, then flushed."""
    audio = checked_mono(mono)
    stream = StreamingConditioner(provider, text_space, batch_windows=batch_windows)
    return track_of(stream.push(audio) + stream.flush())
