"""Offline rendering: an audio file in, an audio-reactive MP4 with the sound muxed in out.

The same chain as the live engine, driven by a frame clock instead of a microphone: frame i
shows the audio at time i / fps, so a render is the deterministic test of the live path.

The unit of work is a range of frames ``[a, b)``:

1. :func:`plan_frames` turns the audio into a :class:`FramePlan` once: the frame clock, the condition
   track (one condition per encoder hop, not per frame) and g_s's loudness scale per frame;
2. :class:`FrameRenderer` renders any range of a prepared scene, computing each batch's conditions
   from the plan when it renders that batch (a 10-minute song never holds a condition per frame). Where
   the renderer composes frames from keyframes (``TPoSRenderer.uses_keyframes``), the UNet runs once per
   condition of the track instead (:class:`Keyframes`) and each frame costs a composition and a decode;
3. :class:`RenderOutput` takes the rendered ranges in any order: it saves their PNGs at once (what a
   resumed render finds again) and encodes the MP4 in frame order on a thread of its own, so the next
   batch renders while this one encodes.

One process renders all ranges in turn (:func:`render_track`); ``tpos_live.distributed`` hands them
to Ray workers. Ranges always follow the grid of ``batch_frames`` (frame i is rendered in the batch
``i // batch_frames`` whoever renders it), and so do keyframes (condition k in the UNet batch
``k // batch_frames``), so every way of rendering gives the same frames.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from tpos_live.audio.decode import Audio, resample
from tpos_live.audio.envelope import guidance_multiplier, loudness_envelope
from tpos_live.conditioning.base import ConditionTrack
from tpos_live.conditioning.interpolate import conditions_at, track_positions
from tpos_live.conditioning.windows import condition_track
from tpos_live.config import RenderSettings
from tpos_live.video.frames import FrameStore, refuse_frames_of_another_render, render_record
from tpos_live.video.writer import VideoWriter

if TYPE_CHECKING:
    from tpos_live.conditioning.base import ConditionProvider, TextSpace
    from tpos_live.diffusion.renderer import Scene, TPoSRenderer
    from tpos_live.specs import SceneSpec

Say = Callable[[str], None]
Range = tuple[int, int]
CACHE_COMPRESSION = 1  # the resume cache is deleted at the end: fast PNGs, not small ones
WRITER_QUEUE_RANGES = 4  # rendered ranges waiting for the writer thread before the renderer waits


@dataclass(frozen=True)
class RenderReport:
    output: Path
    frames: int
    seconds: float
    unet_calls: int
    rendered: int = -1  # frames rendered by this run (the rest were found from an earlier one); -1: all
    keyframes: int = 0  # the conditions the frames are composed from; 0: each frame rendered on its own

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
    return guidance_multiplier(envelope, settings.envelope_depth)


# ---- what every frame is computed from ----------------------------------------------------------


@dataclass(frozen=True)
class FramePlan:
    """What the frames of a render are computed from, small enough to hold and to send to workers.

    Attributes:
        times: (F,) seconds: frame i shows the sound at ``times[i]``.
        track: the condition track of the whole sound (one condition per encoder hop).
        scales: (F,) the loudness envelope's multiplier of g_s per frame (one float each).
        batch_frames: frames per batch: the grid every range of frames follows.
    """

    times: np.ndarray
    track: ConditionTrack
    scales: np.ndarray
    batch_frames: int

    @property
    def count(self) -> int:
        return len(self.times)

    def batch_inputs(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditions (B, 77, D) and g_s scales (B,) of frames ``[start, stop)``, computed for those
        frame times alone."""
        conditions, _ = conditions_at(self.track, self.times[start:stop])
        return conditions, torch.from_numpy(self.scales[start:stop])

    def keyframe_inputs(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
        """For frames ``[start, stop)`` composed from keyframes: the indices (F,) of the track's conditions
        before and after each frame, tau (F,) (the fraction :meth:`batch_inputs` slerps the conditions by)
        and the g_s scales (F,)."""
        lower, upper, fractions = track_positions(self.track.times, self.times[start:stop])
        return lower, upper, torch.from_numpy(fractions), torch.from_numpy(self.scales[start:stop])

    def batches(self, start: int = 0, stop: int | None = None) -> list[Range]:
        """The batches of frames ``[start, stop)`` on the grid of ``batch_frames`` (``start`` on it)."""
        stop = self.count if stop is None else stop
        if start % self.batch_frames:
            raise ValueError(f"range start {start} is not on the grid of {self.batch_frames}-frame batches")
        return [(a, min(a + self.batch_frames, stop)) for a in range(start, stop, self.batch_frames)]


def plan_frames(settings: RenderSettings, provider: ConditionProvider, text_space: TextSpace, source: Audio,
                say: Say = print) -> FramePlan:
    """The plan of a render of the sound ``source`` at ``settings``: the condition track (the provider's
    encoding of the whole sound into ``text_space``: the one call that builds it), the frame clock and the
    envelope's scales."""
    mono = resample(source, provider.sample_rate, channels=1).mono()
    track = condition_track(provider, mono, text_space, settings.windows, settings.condition_scale, say)
    times = frame_times(source.duration, settings.fps)
    scales = envelope_scales(mono, provider.sample_rate, times, settings)
    return FramePlan(times, track, scales, settings.batch_frames)


def prepare_scene(renderer: TPoSRenderer, scene: SceneSpec) -> Scene:
    """z^T, the step noise, the prompt encodings and z^delta of ``scene``: the same in every process
    (everything random is drawn from the seed in the settings)."""
    return renderer.prepare_scene(scene.prompt, scene.negative_prompt, init_image=scene.init_image,
                                  edit_prompt=scene.edit_prompt)


class FrameRenderer:
    """Renders any range of frames of one planned render with one prepared scene.

    Each frame runs the renderer's guided steps, or, where the renderer uses keyframes, is composed from
    the two keyframes around its time (:class:`Keyframes`).

    Args:
        renderer: the renderer (its settings are the render's).
        scene: from :func:`prepare_scene`.
        plan: from :func:`plan_frames`.
    """

    def __init__(self, renderer: TPoSRenderer, scene: Scene, plan: FramePlan) -> None:
        self.renderer, self.scene, self.plan = renderer, scene, plan
        self.keyframes = Keyframes(renderer, scene, plan) if renderer.uses_keyframes else None

    def batches(self, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first frame, frames (B, H, W, 3) uint8)`` for each batch of ``[start, stop)``."""
        for a, b in self.plan.batches(start, stop):
            yield a, self.renderer.decode(self.latents(a, b))

    def latents(self, start: int, stop: int) -> torch.Tensor:
        """The final latents (B, C, h, w) of the frames of one batch ``[start, stop)``."""
        if self.keyframes is None:
            conditions, scales = self.plan.batch_inputs(start, stop)
            return self.renderer.render_latents(self.scene, conditions, scales)
        return self.keyframes.compose(*self.plan.keyframe_inputs(start, stop))

    def render(self, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` (``start`` on the batch grid) as one (stop - start, H, W, 3) array."""
        return np.concatenate([frames for _, frames in self.batches(start, stop)])

    @property
    def unet_calls(self) -> int:
        return self.renderer.unet_calls


class Keyframes:
    """The keyframes B(c) of a render's condition track, and frames composed from them.

    Condition k is rendered in the UNet batch of conditions ``[j * n, (j + 1) * n)``, j = k // n, n the
    plan's ``batch_frames``: CPU kernels may round differently with the batch's size and a row's place in
    it, so a keyframe is the same bytes whichever range of frames needs it first. A batch is kept until the
    frames have moved past it (ranges are rendered in frame order), so each keyframe of a range runs once.
    """

    def __init__(self, renderer: TPoSRenderer, scene: Scene, plan: FramePlan) -> None:
        self.renderer, self.scene = renderer, scene
        self.conditions, self.grid = plan.track.conditions, plan.batch_frames
        self.base = renderer.scene_base(scene)
        self._batches: dict[int, torch.Tensor] = {}

    def compose(self, lower: np.ndarray, upper: np.ndarray, fractions: torch.Tensor,
                audio_scales: torch.Tensor) -> torch.Tensor:
        """Final latents of frames between conditions ``lower`` and ``upper`` (indices, (F,)) at ``fractions``
        tau with the envelope's ``audio_scales`` (as :meth:`FramePlan.keyframe_inputs` gives them)."""
        first, last = int(lower.min()) // self.grid, int(upper.max()) // self.grid
        for done in [j for j in self._batches if j < first]:
            del self._batches[done]
        keys = torch.cat([self._batch(j) for j in range(first, last + 1)])
        offset = first * self.grid
        previous, following = keys[torch.from_numpy(lower - offset)], keys[torch.from_numpy(upper - offset)]
        return self.renderer.compose_latents(self.base, previous, following, fractions, audio_scales)

    def _batch(self, j: int) -> torch.Tensor:
        if j not in self._batches:
            conditions = self.conditions[j * self.grid:(j + 1) * self.grid]
            self._batches[j] = self.renderer.keyframe_latents(self.scene, self.base, conditions)
        return self._batches[j]


class FrameRendererFactory(Protocol):
    """Builds the :class:`FrameRenderer` of a render in another process (a Ray worker), on ``device``, with
    the model assembly of the process that planned it. Picklable: it travels to the worker."""

    def __call__(self, plan: FramePlan, device: str) -> FrameRenderer: ...


class Farm(Protocol):
    """Renders ranges of frames somewhere else (``tpos_live.distributed.RayFarm``)."""

    unet_calls: int

    def describe(self) -> str: ...

    def render(self, plan: FramePlan, ranges: list[Range], put: Callable[[int, np.ndarray], None]) -> None:
        """Render every range of ``ranges`` and hand each to ``put(first frame, frames)``, in any order."""


# ---- one render -----------------------------------------------------------------------------------


def render_track(renderer: TPoSRenderer, plan: FramePlan, source: Audio, output: Path, scene: SceneSpec,
                 frames_dir: Path | None = None, say: Say = print, progress: bool = True, resume: bool = False,
                 manifest: Mapping[str, Any] | None = None, farm: Farm | None = None) -> RenderReport:
    """Render the sound ``source`` (decoded once, before the models loaded) to ``output`` with ``renderer``
    along ``plan`` (from :func:`plan_frames`). Nothing is left at ``output`` unless it completes.

    Args:
        frames_dir: also write every frame there as a PNG.
        resume: keep the frames already rendered (in ``frames_dir``, else in the cache beside ``output``
            that a render with ``resume`` keeps until it completes) and render only the others.
        manifest: what the frames are rendered from (a resumed render refuses frames of another).
        farm: render the frames there (None: in this process, with ``renderer``).
    """
    started = time.perf_counter()
    settings = renderer.settings
    say(f"rendering {plan.count} frames at {settings.width}x{settings.height}, {settings.fps:g} fps, "
        f"{settings.mode} mode ({settings.sampler}, {settings.steps} steps, guided from step "
        f"{renderer.first_guided})" + (f" {farm.describe()}" if farm is not None else ""))
    keyframes = len(plan.track.times) if renderer.uses_keyframes else 0
    say(renderer.describe_frames(keyframes / source.duration if keyframes and source.duration > 0 else None))
    # the scene before any file is touched: a bad init image fails here (Ray workers prepare their own)
    frame_renderer = FrameRenderer(renderer, prepare_scene(renderer, scene), plan) if farm is None else None
    with open_output(output, source, plan, settings, frames_dir, resume, manifest or {}, say, progress) as out:
        if farm is not None:
            farm.render(plan, out.todo, out.put)
            unet_calls = farm.unet_calls
        else:
            for a, b in out.todo:
                for first, batch in frame_renderer.batches(a, b):
                    out.put(first, batch)
            unet_calls = frame_renderer.unet_calls
    rendered = sum(b - a for a, b in out.todo)
    return RenderReport(output, plan.count, time.perf_counter() - started, unet_calls, rendered, keyframes)


def cache_folder(output: Path) -> Path:
    """Where a render with ``--resume`` and no ``--frames`` keeps its frames until the MP4 is complete."""
    return output.with_name(f".{output.name}.frames")


def open_output(output: Path, source: Audio, plan: FramePlan, settings: RenderSettings, frames_dir: Path | None,
                resume: bool, manifest: Mapping[str, Any], say: Say, progress: bool) -> RenderOutput:
    """The output of a render: where its frames go and which of them an earlier run already made."""
    store, cache = None, False
    if frames_dir is not None:
        store = FrameStore(frames_dir, settings.width, settings.height)
    elif resume:
        store, cache = FrameStore(cache_folder(output), settings.width, settings.height, CACHE_COMPRESSION), True
        say(f"frames cached in {store.folder} for --resume (removed when the render completes)")
    manifest = render_record(manifest, plan.count)
    stored: set[int] = set()
    if store is not None:
        if resume:
            stored = _frames_of_this_render(store, manifest, plan.count)
            say(f"resuming: {len(stored)} of {plan.count} frames already rendered in {store.folder}")
        else:  # frames of another render must not pass for this one's if this one is resumed later
            for index in range(plan.count):
                store.path(index).unlink(missing_ok=True)
        store.write_manifest(manifest)
    return RenderOutput(output, source, plan, settings, store, stored, cache, progress)


def _frames_of_this_render(store: FrameStore, manifest: dict[str, Any], count: int) -> set[int]:
    refuse_frames_of_another_render(store.folder, manifest, count)
    return store.valid_frames(range(count))


class RenderOutput:
    """The MP4 (complete or nothing), the PNGs and the progress bar of one render.

    ``put(first, frames)`` takes rendered ranges in any order (a bounded queue: it waits while the writer
    is behind). The writer thread saves each range's PNGs at once, and encodes the frames, with the sound
    under them, in frame order, reading back the frames an earlier run left in the store. Leaving the
    ``with`` block normally waits for the writer and finishes the file; leaving it with an error
    discards it.

    Attributes:
        todo: the batches to render (those with a frame the store lacks), in frame order.
    """

    def __init__(self, output: Path, source: Audio, plan: FramePlan, settings: RenderSettings,
                 store: FrameStore | None, stored: set[int], cache: bool, progress: bool) -> None:
        self.plan, self.store, self.stored, self.cache = plan, store, stored, cache
        self.source, self.fps = source, settings.fps
        self.todo = [(a, b) for a, b in plan.batches() if not all(i in stored for i in range(a, b))]
        self.writer = VideoWriter(output, settings.fps, settings.width, settings.height,
                                  audio_sample_rate=source.sample_rate, audio_channels=source.channels)
        self.bar = _progress_bar(plan.count, progress, initial=len(stored))
        self._queue: queue.Queue = queue.Queue(maxsize=WRITER_QUEUE_RANGES)
        self._pending: dict[int, np.ndarray] = {}
        self._next = 0  # the next frame to encode
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_all, name="render-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> RenderOutput:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is None:
                self._finish()
                self.writer.close()
                if self.cache:
                    self.store.remove(self.plan.count)
            else:
                self._stop()
                self.writer.abort()
        finally:
            self.bar.close()

    def put(self, first: int, frames: np.ndarray) -> None:
        """Hand over rendered frames ``[first, first + len(frames))``."""
        while True:
            self._raise_writer_error()
            try:
                self._queue.put((first, frames), timeout=0.2)
                break
            except queue.Full:
                continue
        self.bar.update(sum(1 for i in range(first, first + len(frames)) if i not in self.stored))

    # ---- the writer thread -----------------------------------------------------------------------

    def _write_all(self) -> None:
        while True:
            item = self._queue.get()
            if self._error is not None:
                if item is None:
                    return
                continue  # keep taking, so that put() never waits on a dead writer
            try:
                if item is None:  # the end: what is left is in the store (all of it, if nothing was rendered)
                    self._encode_ready()
                    return
                self._take(*item)
            except BaseException as error:  # handed to the rendering thread at its next put() or at the end
                self._error = error

    def _take(self, first: int, frames: np.ndarray) -> None:
        for offset, frame in enumerate(frames):
            index = first + offset
            if self.store is not None and index not in self.stored:
                self.store.save(index, frame)
            self._pending[index] = frame
        self._encode_ready()

    def _encode_ready(self) -> None:
        """Encode frames in order for as long as the next one is here (rendered, or in the store), then
        the sound under them (in one piece: less work holding the GIL while the renderer needs it)."""
        first = self._next
        while self._next < self.plan.count:
            index = self._next
            if index in self._pending:
                frame = self._pending.pop(index)
            elif index in self.stored:
                frame = self.store.load(index)
            else:
                break
            self.writer.write_frame(frame)
            self._next += 1
        if self._next > first:
            self.writer.write_audio(_audio_between(self.source, first, self._next, self.fps))

    def _finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise_writer_error()
        if self._next != self.plan.count:
            raise RuntimeError(f"only {self._next} of {self.plan.count} frames reached the video")

    def _stop(self) -> None:
        self._error = self._error or RuntimeError("render stopped")
        while True:  # make room for the sentinel even if the queue is full
            try:
                self._queue.put(None, timeout=0.2)
                break
            except queue.Full:
                continue
        self._thread.join()

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            raise self._error


def _audio_between(source: Audio, first_frame: int, end_frame: int, fps: float) -> np.ndarray:
    lo = round(first_frame * source.sample_rate / fps)
    hi = round(end_frame * source.sample_rate / fps)
    return source.samples[:, lo:hi]


def _progress_bar(total: int, enabled: bool, initial: int = 0):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="frame", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)
