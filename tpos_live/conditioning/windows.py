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

Departure in both: the maps are computed per segment, not from the whole window's map (see
:func:`tpos_live.audio.spectrogram.segment_map`). Only a TPoS encoder has windows of segments; other
providers (the CLAP concept bank) keep their own windows, said as a warning.

The frames then take these conditions by time (``conditions_at``: slerp between neighbours).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from tpos_live.conditioning.base import ConditionProvider, ConditionTrack, TextSpace, checked_mono
from tpos_live.conditioning.tpos_encoder import TPoSProvider
from tpos_live.names import WINDOWS

_WINDOW_WORDS = {"official": "consecutive windows of N segments, as the official txt2img",
                 "sliding": "a window ending at each segment, as live"}


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
    say(f"encoder windows: {windows} ({_WINDOW_WORDS[windows]}), MAP input {x} * alpha_n * s_n")
    if windows == "sliding":
        return provider.encode(mono, text_space, condition_scale=condition_scale)
    return official_windows(provider, mono, text_space, condition_scale)


@torch.inference_mode()
def official_windows(provider: TPoSProvider, mono: np.ndarray, text_space: TextSpace,
                     condition_scale: float | None = None, batch_windows: int = 8) -> ConditionTrack:
    """The official windows: segment k (of length L, from sample k * L) is segment k mod N of window
    k // N, and its condition is MAP(X * alpha * s) at that position; one condition per segment that
    starts inside the audio, at the segment's centre, with weight alpha."""
    provider.check_compatible(text_space)
    audio = checked_mono(mono)
    length, n = provider.config.segment_samples, provider.config.segments
    segments = -(-len(audio) // length)
    windows = -(-segments // n)
    padded = np.zeros(windows * n * length)
    padded[: len(audio)] = audio
    scale = float(n if condition_scale is None else condition_scale)
    tokens, weights = [], []
    for first in range(0, windows, batch_windows):
        count = min(batch_windows, windows - first)
        cut = padded[first * n * length : (first + count) * n * length].reshape(count * n, length)
        features = provider.segment_features(cut).reshape(count, n, -1)
        output = provider.encoder.temporal(features)
        vectors = scale * output.weights.unsqueeze(-1) * output.sequence  # (count, N, D), in window order
        tokens.append(provider.map_model(vectors.reshape(count * n, -1)))
        weights.append(output.weights.reshape(-1))
    return ConditionTrack(
        times=(np.arange(segments) + 0.5) * length / provider.sample_rate,
        conditions=text_space.with_start_token(torch.cat(tokens)[:segments]),
        weights=torch.cat(weights)[:segments].double().cpu().numpy(),
    )
