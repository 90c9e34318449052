"""How far live conditions are from offline ones under the official floor, on the same sound.

Offline (a render's official windows), the official floor lies 80 dB below the whole file's peak; a
stream cannot know that peak, so live takes each segment's own. This script measures what that costs:

1. the maps: how far each segment's own peak lies below the file's, and the mean absolute difference
   of the two maps (weight-free figures);
2. the encoder's outputs on the official windows, once with the file's peak and once with each
   segment's: cosine of s_n and of the conditions MAP(5 alpha_n s_n), per segment, and the distance
   between the two against the distance between different segments' offline ones;
3. the live stream as it runs (sliding windows on the live grid, segment peaks) against the render's
   official windows, each live condition paired with the official one nearest in time.

The encoder is a seeded random one unless ``--encoder`` names a checkpoint: with random weights the
cosines show how much the input change moves a network of this shape, not what a trained encoder does.

    python scripts/floor_reference.py examples/groove.wav other.wav [--encoder ckpt.safetensors]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from tpos_live.audio.decode import decode_audio
from tpos_live.audio.spectrogram import (
    SpectrogramConfig,
    centred_frame_count,
    frame_decibels,
    official_stride,
    segment_map,
    segment_samples,
    signal_peak_decibels,
)
from tpos_live.conditioning.base import TextSpace
from tpos_live.conditioning.checkpoint import load_tpos, random_tpos
from tpos_live.conditioning.streaming import StreamingConditioner, track_of
from tpos_live.conditioning.tpos_encoder import TPoSConfig, TPoSProvider, condition_vectors
from tpos_live.conditioning.windows import official_window_maps, official_windows


def segment_peak_maps(mono: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    """The official windows' maps with each segment's own peak: what live would compute for them."""
    file_peak = official_window_maps(mono, cfg)
    stride, length = official_stride(cfg), segment_samples(cfg)
    count = -(-centred_frame_count(len(mono), cfg) // cfg.segment_frames)
    padded = np.concatenate([np.zeros(cfg.n_fft // 2), mono, np.zeros(count * stride + length)])
    own = np.zeros_like(file_peak).reshape(-1, *file_peak.shape[2:])
    for k in range(count):
        own[k] = segment_map(padded[k * stride : k * stride + length], cfg)
    own = own.reshape(file_peak.shape)
    own[file_peak == 0.0] = 0.0  # the canvas zeros past the end stay zeros
    return own


def segment_peaks_below_file(mono: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    stride, length = official_stride(cfg), segment_samples(cfg)
    count = -(-centred_frame_count(len(mono), cfg) // cfg.segment_frames)
    padded = np.concatenate([np.zeros(cfg.n_fft // 2), mono, np.zeros(count * stride + length)])
    file_peak = signal_peak_decibels(mono, cfg)
    return np.array([file_peak - frame_decibels(padded[k * stride : k * stride + length], cfg).max()
                     for k in range(count)])


@torch.inference_mode()
def outputs(provider: TPoSProvider, maps: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """s_n ``(W * N, D)`` and the conditions' MAP tokens ``(W * N, 76 * D)`` of windows of maps."""
    windows, n = maps.shape[:2]
    features = provider.map_features(torch.from_numpy(maps).reshape(windows * n, 1, *maps.shape[2:]))
    output = provider.encoder.temporal(features.reshape(windows, n, -1))
    tokens = provider.map_model(condition_vectors(output).reshape(windows * n, -1))
    return output.sequence.reshape(windows * n, -1), tokens.reshape(windows * n, -1)


def summary(values: np.ndarray) -> str:
    return f"median {np.median(values):.4f}, min {values.min():.4f}, mean {values.mean():.4f}"


def measure(path: str, provider: TPoSProvider, text_space: TextSpace) -> None:
    cfg = provider.config.spectrogram
    mono = decode_audio(path, sample_rate=cfg.sample_rate, channels=1).mono()
    segments = -(-centred_frame_count(len(mono), cfg) // cfg.segment_frames)
    below = segment_peaks_below_file(mono, cfg)
    offline_maps, live_maps = official_window_maps(mono, cfg), segment_peak_maps(mono, cfg)
    difference = np.abs(offline_maps - live_maps).reshape(-1, *offline_maps.shape[2:])[:segments]
    print(f"{path}: {len(mono) / cfg.sample_rate:.2f} s, {segments} official segments")
    print(f"  segment peak below the file's: {summary(below)} dB")
    print(f"  mean |map difference| per segment: {summary(difference.mean(axis=(1, 2)))}")
    s_offline, c_offline = outputs(provider, offline_maps)
    s_live, c_live = outputs(provider, live_maps)
    s_cos = F.cosine_similarity(s_offline, s_live, dim=-1)[:segments].numpy()
    c_cos = F.cosine_similarity(c_offline, c_live, dim=-1)[:segments].numpy()
    print(f"  same windows, segment peak vs file peak: cos(s_n) {summary(s_cos)}; cos(condition) {summary(c_cos)}")
    # Random networks map every input near one point, so cosines near 1 say little: the distance between
    # the two against the distance between the offline conditions of different segments says more.
    for name, offline, live in (("s_n", s_offline, s_live), ("condition", c_offline, c_live)):
        moved = (offline - live).norm(dim=-1)[:segments]
        spread = torch.pdist(offline[:segments]).median()
        print(f"  |{name} live - offline| / median |{name} between segments|: {summary((moved / spread).numpy())}")
    offline_track = official_windows(provider, mono, text_space)
    stream = StreamingConditioner(provider, text_space)
    live_track = track_of(stream.push(mono) + stream.flush())
    nearest = np.abs(offline_track.times[None, :] - live_track.times[:, None]).argmin(axis=1)
    pair_cos = F.cosine_similarity(live_track.conditions.flatten(1),
                                   offline_track.conditions[nearest].flatten(1), dim=-1).numpy()
    print(f"  live stream vs render (nearest official condition): cos(condition) {summary(pair_cos)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", nargs="+")
    parser.add_argument("--encoder", help="a TPoS checkpoint (default: a random encoder, seed 0, 768 wide)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.encoder:
        provider = load_tpos(args.encoder)
        spectrogram = dataclasses.replace(provider.config.spectrogram, floor="official")
        provider.config = dataclasses.replace(provider.config, spectrogram=spectrogram)
    else:
        config = TPoSConfig(spectrogram=SpectrogramConfig(kind="stft", floor="official"))
        provider = random_tpos(config, seed=args.seed)
    print(f"encoder: {provider.name}{' (RANDOM weights)' if provider.random_weights else ''}")
    # A zero start token: the cosines compare the audio tokens alone.
    text_space = TextSpace(empty=torch.zeros(77, provider.embed_dim), family=provider.text_family)
    for path in args.audio:
        measure(path, provider, text_space)


if __name__ == "__main__":
    main()
