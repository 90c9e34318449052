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

import numpy as np
import torch

from tpos_live.audio.decode import decode_audio
from tpos_live.audio.envelope import loudness_envelope
from tpos_live.backends.registry import create_backend
from tpos_live.conditioning.interpolate import conditions_at
from tpos_live.conditioning.providers import load_provider
from tpos_live.config import RenderSettings
from tpos_live.diffusion.loading import ModelSpec, load_stack
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.video.writer import VideoWriter, check_output_path


@dataclass(frozen=True)
class RenderJob:
    """What to render: the audio, the scene, the models and where the result goes."""

    audio: Path
    output: Path
    prompt: str
    settings: RenderSettings
    model: ModelSpec
    encoder: str | None = None  # TPoS checkpoint path, "random", "clap[:source]", or None for the default
    concepts: Path | None = None  # concept bank TOML for CLAP conditioning
    negative_prompt: str = ""
    init_image: Path | None = None
    frames_dir: Path | None = None
    backend: str = "torch"  # see tpos_live.backends.registry.BACKENDS
    allow_fallback: bool = False  # an unavailable backend falls back to torch, with a warning
    engines: Path | None = None  # ONNX / TensorRT artefacts (default: the checkout's engines/)
    static_shapes: bool = False


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


def render_file(job: RenderJob, say: Callable[[str], None] = print, progress: bool = True) -> RenderReport:
    """Render ``job`` to an MP4. Nothing is left at ``job.output`` unless it completes."""
    started = time.perf_counter()
    # 1. Check the output path and the audio before any model loads.
    check_output_path(job.output)
    source = decode_audio(job.audio, channels=2)

    # 2. Load the models and the audio encoder (refusing mismatched widths).
    stack = load_stack(job.model, progress=progress)
    say(f"model: {stack.name} on {stack.device} ({str(stack.dtype).removeprefix('torch.')})")
    backend = create_backend(job.backend, stack, job.settings, allow_fallback=job.allow_fallback, say=say,
                             engines=job.engines, static_shapes=job.static_shapes)
    renderer = TPoSRenderer(stack, job.settings, backend=backend)
    text_space = renderer.text_space()
    provider = load_provider(job.encoder, stack, text_space, say=say, concepts=job.concepts,
                             prompt_encoder=renderer.encode_prompt, progress=progress)
    if stack.random_weights:
        say(f"warning: model '{stack.name}' has RANDOM weights: frames show noise patterns, not images")

    # 3. Audio to a condition track, then one condition and one guidance scale per frame.
    mono = decode_audio(job.audio, sample_rate=provider.sample_rate, channels=1).mono()
    track = provider.encode(mono, text_space)
    times = frame_times(source.duration, job.settings.fps)
    conditions, _ = conditions_at(track, times)
    scales = envelope_scales(mono, provider.sample_rate, times, job.settings)

    # 4. The scene: z^T, prompt encodings and z^delta, once for the whole video.
    scene = renderer.prepare_scene(job.prompt, job.negative_prompt, init_image=job.init_image)

    # 5. Render in batches, writing frames and their audio as they are made.
    say(f"rendering {len(times)} frames at {job.settings.width}x{job.settings.height}, "
        f"{job.settings.fps:g} fps, {job.settings.mode} mode ({job.settings.sampler}, "
        f"{job.settings.steps} steps, guided from step {renderer.first_guided})")
    writer = VideoWriter(job.output, job.settings.fps, job.settings.width, job.settings.height,
                         audio_sample_rate=source.sample_rate, audio_channels=source.channels,
                         frames_dir=job.frames_dir)
    with writer, _progress_bar(len(times), progress) as bar:  # leaving the block finishes or discards the file
        for start in range(0, len(times), job.settings.batch_frames):
            stop = min(start + job.settings.batch_frames, len(times))
            frames = renderer.render(scene, conditions[start:stop], torch.from_numpy(scales[start:stop]))
            for frame in frames:
                writer.write_frame(frame)
            writer.write_audio(_audio_between(source, start, stop, job.settings.fps))
            bar.update(stop - start)
    elapsed = time.perf_counter() - started
    return RenderReport(job.output, len(times), elapsed, renderer.unet_calls)


def _audio_between(source, first_frame: int, end_frame: int, fps: float) -> np.ndarray:
    lo = round(first_frame * source.sample_rate / fps)
    hi = round(end_frame * source.sample_rate / fps)
    return source.samples[:, lo:hi]


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", disable=not enabled, file=sys.stderr, dynamic_ncols=True)
