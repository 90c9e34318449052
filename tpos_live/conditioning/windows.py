"""How a whole file is cut into encoder windows: the official code's way, or the live path's.

- ``"official"`` (paper mode's default): the audio is cut into consecutive, non-overlapping windows of
  N segments (the last one padded with silence), and each window gives N conditions,
  MAP(X * alpha_n * s_n) for n = 1..N, stamped at the centre of segment n. This is the official
  ``txt2img.py``: it encodes one window and makes frame n from its n-th segment. X is N (the paper's
  k = 1), or the settings' ``condition_scale`` (the official img2img uses 20).
- ``"sliding"`` (fast mode and live, the only choice there): one window per hop that ends with the newest
  segment, giving that segment's MAP(N * alpha_N * s_N) (:class:`~tpos_live.conditioning.tpos_encoder.TPoSProvider`).
  Live has to work this way (a window can only end with the newest sound); it is a departure from the
  official code, where segment n's condition depends on the segments after it in its window.

The official windows' maps are the official code's (:func:`tpos_live.audio.spectrogram.official_segment_maps`):
the whole file's centre-padded map, cut every 153 columns (78,336 samples), with the official floor's
peak taken over the whole file. The sliding windows' maps are computed per segment from its own samples
on the live grid (a segment every 78,848 samples), and the official floor's peak is the segment's own
(:func:`tpos_live.audio.spectrogram.segment_map`). Only a TPoS encoder has windows of segments; other
providers (the CLAP concept bank) keep their own windows, said as a warning.

The frames then take these conditions by time (``conditions_at``: slerp between neighbours).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from tpos_live.audio.spectrogram import (
    SpectrogramConfig,
    centred_frame_count,
    official_segment_maps,
    official_stride,
)
from tpos_live.conditioning.base import ConditionProvider, ConditionTrack, TextSpace, checked_mono
from tpos_live.conditioning.tpos_encoder import TPoSProvider
from tpos_live.names import WINDOWS

_WINDOW_WORDS = {"official": "consecutive windows of N segments, as the official txt2img",
                 "sliding": "a window ending at each segment, as live"}
_PEAK_WORDS = {"official": "the whole file's peak", "sliding": "each segment's own peak, as live"}


def condition_track(provider: ConditionProvider, mono: np.ndarray, text_space: TextSpace,
                    windows: str = "sliding", condition_scale: float | None = None,
                    say: Callable[[str], None] = print) -> ConditionTrack:
    """The conditions of a whole mono signal, windowed the ``windows`` way (see the module docstring).

    ``condition_scale``: X of MAP(X * alpha_n * s_n) (None: N). A provider other than TPoS ignores both
    choices, with a warning through ``say``.
    """
    if windows not in WINDOWS:
        raise ValueError(f"windows must be one of {WINDOWS}, got {windows!r}")
    if not isinstance(provider, TPoSProvider):
        if windows == "official" or condition_scale is not None:
            say(f"warning: {provider.name} has no TPoS windows of segments: its own windows are used "
                f"(the official windows and the condition scale are for a TPoS encoder)")
        return provider.encode(mono, text_space)
    x = "N" if condition_scale is None else f"{condition_scale:g}"
    peak = ""
    if provider.config.spectrogram.floor == "official":
        peak = f", official maps floored below {_PEAK_WORDS[windows]}"
    say(f"encoder windows: {windows} ({_WINDOW_WORDS[windows]}), MAP input {x} * alpha_n * s_n{peak}")
    if windows == "sliding":
        return provider.encode(mono, text_space, condition_scale=condition_scale)
    return official_windows(provider, mono, text_space, condition_scale)


def official_window_maps(mono: np.ndarray, config: SpectrogramConfig) -> np.ndarray:
    """``(W, N, height, segment_frames)`` float32: the maps of the official windows of a whole signal, the
    last one filled with zero maps (the official code's zero canvas)."""
    maps = official_segment_maps(mono, config)
    windows = -(-len(maps) // config.segments)
    filled = np.zeros((windows * config.segments, *maps.shape[1:]), dtype=np.float32)
    filled[: len(maps)] = maps
    return filled.reshape(windows, config.segments, *maps.shape[1:])


@torch.inference_mode()
def official_windows(provider: TPoSProvider, mono: np.ndarray, text_space: TextSpace,
                     condition_scale: float | None = None, batch_windows: int = 8) -> ConditionTrack:
    """The official windows: segment k (153 columns of the official map, from sample k * 78,336 - 512)
    is segment k mod N of window k // N, and its condition is MAP(X * alpha * s) at that position; one
    condition per segment that holds a column of the audio, at the segment's centre, with weight alpha."""
    provider.check_compatible(text_space)
    audio = checked_mono(mono)
    spectrogram = provider.config.spectrogram
    window_maps = official_window_maps(audio, spectrogram)
    segments = -(-centred_frame_count(len(audio), spectrogram) // spectrogram.segment_frames)
    n = provider.config.segments
    scale = float(n if condition_scale is None else condition_scale)
    tokens, weights = [], []
    for first in range(0, len(window_maps), batch_windows):
        maps = torch.from_numpy(window_maps[first : first + batch_windows])
        count = len(maps)
        features = provider.map_features(maps.reshape(count * n, 1, *maps.shape[2:])).reshape(count, n, -1)
        output = provider.encoder.temporal(features)
        vectors = scale * output.weights.unsqueeze(-1) * output.sequence  # (count, N, D), in window order
        tokens.append(provider.map_model(vectors.reshape(count * n, -1)))
        weights.append(output.weights.reshape(-1))
    stride = official_stride(spectrogram)
    centre = (spectrogram.segment_frames - 1) / 2 * spectrogram.hop_length  # of the first column's frame
    return ConditionTrack(
        times=(np.arange(segments) * stride + centre) / provider.sample_rate,
        conditions=text_space.with_start_token(torch.cat(tokens)[:segments]),
        weights=torch.cat(weights)[:segments].double().cpu().numpy(),
    )
