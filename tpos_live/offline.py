"""Offline rendering: an audio file in, an audio-reactive MP4 with the sound muxed in out.

The same chain as the live engine, driven by a frame clock instead of a microphone: frame i
shows the audio at time i / fps, so a render is the deterministic test of the live path.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tpos_live.audio.decode import Audio, decode_audio
from tpos_live.audio.envelope import loudness_envelope
from tpos_live.conditioning.interpolate import conditions_at
from tpos_live.conditioning.windows import condition_track
from tpos_live.config import RenderSettings
from tpos_live.video.writer import VideoWriter, check_output_path

if TYPE_CHECKING:
    from tpos_live.session import Models, SceneSpec


@dataclass(frozen=True)
class RenderReport:
    output: Path
    frames: int
    seconds: float
    unet_calls: int

    @property
    def seconds_per_frame(self) -> float:
        return self.seconds / max(self.frames, 1)


def frame_times(duration: float, fps: float) -> np.ndarray:
    """Frame i at i / fps; enough frames to cover the audio (at least one)."""
    count = max(1, math.ceil(duration * fps - 1e-9))
    return np.arange(count, dtype=np.float64) / fps


def envelope_scales(mono: np.ndarray, sample_rate: int, times: np.ndarray, settings: RenderSettings) -> np.ndarray:
    """Per-frame multiplier of g_s: 1 - depth + depth * loudness (depth 0 reproduces the paper)."""
    if settings.envelope_depth == 0.0:
        return np.ones(len(times))
    envelope = loudness_envelope(mono, sample_rate, times, settings.attack_seconds, settings.release_seconds)
    return 1.0 - settings.envelope_depth + settings.envelope_depth * envelope


def check_render_inputs(audio: Path, output: Path) -> Audio:
    """The decoded sound of ``audio`` (its own rate and channels, for the MP4), after checking that
    ``output`` can be written: both fail before any model loads."""
    check_output_path(output)
    return decode_audio(audio, channels=2)


def render_track(models: Models, source: Audio, audio: Path, output: Path, scene: SceneSpec,
                 frames_dir: Path | None = None, say: Callable[[str], None] = print,
                 progress: bool = True) -> RenderReport:
    """Render the sound ``source`` (decoded from ``audio``) to ``output`` with ``models``. Nothing is left
    at ``output`` unless it completes."""
    started = time.perf_counter()
    settings, provider, renderer = models.settings, models.provider, models.renderer()

    # 1. Audio to a condition track, then one condition and one guidance scale per frame.
    mono = decode_audio(audio, sample_rate=provider.sample_rate, channels=1).mono()
    track = condition_track(provider, mono, models.text_space, settings.windows, settings.condition_scale, say)
    times = frame_times(source.duration, settings.fps)
    conditions, _ = conditions_at(track, times)
    scales = envelope_scales(mono, provider.sample_rate, times, settings)

    # 2. The scene: z^T, prompt encodings and z^delta, once for the whole video.
    prepared = renderer.prepare_scene(scene.prompt, scene.negative_prompt, init_image=scene.init_image,
                                      edit_prompt=scene.edit_prompt)

    # 3. Render in batches, writing frames and their audio as they are made.
    say(f"rendering {len(times)} frames at {settings.width}x{settings.height}, {settings.fps:g} fps, "
        f"{settings.mode} mode ({settings.sampler}, {settings.steps} steps, guided from step "
        f"{renderer.first_guided})")
    writer = VideoWriter(output, settings.fps, settings.width, settings.height,
                         audio_sample_rate=source.sample_rate, audio_channels=source.channels,
                         frames_dir=frames_dir)
    with writer, _progress_bar(len(times), progress) as bar:  # leaving the block finishes or discards the file
        for start in range(0, len(times), settings.batch_frames):
            stop = min(start + settings.batch_frames, len(times))
            frames = renderer.render(prepared, conditions[start:stop], torch.from_numpy(scales[start:stop]))
            for frame in frames:
                writer.write_frame(frame)
            writer.write_audio(_audio_between(source, start, stop, settings.fps))
            bar.update(stop - start)
    elapsed = time.perf_counter() - started
    return RenderReport(output, len(times), elapsed, renderer.unet_calls)


def _audio_between(source, first_frame: int, end_frame: int, fps: float) -> np.ndarray:
    lo = round(first_frame * source.sample_rate / fps)
    hi = round(end_frame * source.sample_rate / fps)
    return source.samples[:, lo:hi]


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", disable=not enabled, file=sys.stderr, dynamic_ncols=True)
