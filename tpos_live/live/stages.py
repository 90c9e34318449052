"""The live engine's worker threads: encoder, renderer, presenter and recorder (scenes: ``scenes.py``).

    source ring --(every hop)--> EncoderStage --conditions mailbox--> RenderStage --frames mailbox--> you
                                 SceneStage  --scene cache----------^       (or --batches--> Presenter)
    source ring + frames mailbox --> Recorder --> mp4

Every hand-over is a latest-wins mailbox, so a slow stage drops stale work instead of queueing
latency. No stage prints: they count into :class:`~tpos_live.live.stats.LiveStats` and speak
through a reporter.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from tpos_live.audio.channels import StreamResampler
from tpos_live.audio.envelope import attack_release, frame_loudness, guidance_multiplier
from tpos_live.audio.sources import AudioSource
from tpos_live.backends.base import Backend, completion_fence
from tpos_live.conditioning.base import ConditionProvider, TextSpace
from tpos_live.conditioning.interpolate import SlerpPair
from tpos_live.conditioning.streaming import StreamingConditioner, as_streamable
from tpos_live.config import RenderSettings
from tpos_live.diffusion.frames import FrameDownload, PendingFrames
from tpos_live.diffusion.renderer import Scene, TPoSRenderer
from tpos_live.diffusion.stack import ModelStack
from tpos_live.live.control import SCENE_SETTINGS, ControlState, LiveControl
from tpos_live.live.mailbox import Mailbox
from tpos_live.live.scenes import SceneCache, SceneFade, SceneStage, start_fade
from tpos_live.live.stats import LiveStats
from tpos_live.live.streams import BACKGROUND_PRIORITY, RENDER_PRIORITY, adopt, finish_work, stage_stream
from tpos_live.reporting import Reporter
from tpos_live.video.writer import VideoWriter
from tpos_live.worker import Stage


@dataclass(frozen=True)
class LiveCondition:
    """One encoder result: the condition for the audio window that ended at ``audio_end``.

    Attributes:
        condition: ``(77, D)`` float32 on the compute device, ready for the UNet.
        weight: its attention weight alpha (the magnitude TPoS gives the newest segment).
        audio_end: absolute index (in the source's ring) just past the window's newest sample.
        audio_time: monotonic time at which that newest sample was captured.
        published: monotonic time the condition was ready.
        index: 1 for the first condition, then counting up.
    """

    condition: torch.Tensor
    weight: float
    audio_end: int
    audio_time: float
    published: float
    index: int
    host: torch.Tensor | None = None  # the condition on the CPU (float32), for the slerp's angle

    @property
    def on_host(self) -> torch.Tensor:
        return self.condition if self.host is None else self.host


@dataclass(frozen=True)
class Frame:
    """A delivered frame.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        ready: monotonic time it was delivered.
        audio_time: capture time of the newest audio behind its condition (None for black frames).
        condition_time: when that condition was published (None for black frames).
        condition_index: the newest condition it used (0 for black frames).
        audio_scale: the loudness envelope's multiplier of g_s for this frame.
        loudness: the loudness envelope itself (0..1): what scaled g_s, as the app's trace shows it.
        mix_audio_time: capture time of the condition mix it shows: the capture times of the two
            conditions its slerp mixes, weighted as the slerp weighs them (the frame's audio-to-frame
            latency is ``ready - mix_audio_time``; capture times include the device's input latency).
    """

    image: np.ndarray
    ready: float
    audio_time: float | None
    condition_time: float | None
    condition_index: int
    audio_scale: float
    loudness: float = 0.0
    mix_audio_time: float | None = None


def window_samples(provider: ConditionProvider) -> int:
    """Samples (at the provider's rate) of one encoder window: its segment grid's (CLAP: one segment),
    or N segments of its config (TPoS: 5 x ~1.79 s). ValueError for a provider that says neither."""
    grid = getattr(provider, "grid", None)
    if grid is not None:
        return grid.window_segments * grid.segment_samples
    config = getattr(provider, "config", None)
    if config is None or not hasattr(config, "segment_samples"):
        raise ValueError(f"provider '{provider.name}' does not say its window (a segment grid, or "
                         f"config.segments and config.segment_samples)")
    return config.segments * config.segment_samples


class EncoderStage(Stage):
    """Streams the source's sound into the provider and publishes each new window's condition at once.

    Windows lie on the provider's streaming grid (:mod:`tpos_live.conditioning.streaming`): for a TPoS
    encoder, a hop of the divisor of its segment length nearest ``hop_seconds`` (0.25 s gives 0.255 s at
    44.1 kHz); a CLAP bank keeps its own. So each hop computes the newest segment's CNN features and one
    LSTM/attention/MAP window; the older segments' features come from the stream's cache. The stage
    wakes when the next window's last sample is due, so a condition is published as soon as its audio
    is there. When an encode takes longer than a hop, the stale windows are skipped, not caught up.
    Without new audio (device lost, not started) nothing is published. A new stream starts, seeded with
    the newest window of sound, when the source or the provider is swapped (:meth:`follow_source`,
    :meth:`follow_provider`).
    """

    name = "encoder"
    longest_wait = 0.05  # seconds: a swapped source or provider is noticed at least this often

    def __init__(self, provider: ConditionProvider, text_space: TextSpace, source: AudioSource,
                 hop_seconds: float, conditions: Mailbox[LiveCondition], stats: LiveStats,
                 report: Reporter, device: torch.device | str = "cpu") -> None:
        super().__init__(report)
        self.provider, self.text_space, self.source = provider, text_space, source
        self.device = torch.device(device)  # where the renderer wants the conditions
        self.hop_seconds = hop_seconds
        self.conditions, self.stats = conditions, stats
        _check_streams(provider)
        self.latest: LiveCondition | None = None
        self._stream: _SourceStream | None = None
        self._count = 0

    def _run(self) -> None:
        with stage_stream(self.device, BACKGROUND_PRIORITY):  # on a GPU: never queued before a frame
            while not self._stop.wait(self._wait()):
                self.encode_now()

    def _wait(self) -> float:
        stream = self._stream
        if stream is None:
            return 0.0
        due = stream.conditioner.samples_to_next_window / stream.provider.sample_rate
        return min(max(due, 0.002), self.longest_wait)

    def follow_source(self, source: AudioSource) -> None:
        self.source = source

    def follow_provider(self, provider: ConditionProvider) -> None:
        _check_streams(provider)
        self.provider = provider

    def encode_now(self) -> LiveCondition | None:
        """Push the sound captured since the last call; publish the newest window it completed (None when
        none completed, or the encoder failed)."""
        source, provider = self.source, self.provider  # one pair for the whole call, even if swapped meanwhile
        stream = self._stream
        if stream is None or stream.source is not source or stream.provider is not provider:
            stream = self._stream = _SourceStream(source, provider, self.text_space, self.hop_seconds)
        block = stream.read()
        if not len(block):
            return None
        started = time.perf_counter()
        try:
            done = stream.conditioner.push(block, latest_only=True)
        except Exception as error:  # noqa: BLE001 - counted and reported; a new stream tries again
            self._stream = None
            self.stats.add("encoder_errors")
            self.report("error", f"audio encoder failed ({type(error).__name__}: {error}); keeping the last "
                                 f"condition")
            return None
        if not done:
            return None
        self.stats.stage("encode", time.perf_counter() - started)
        return self._publish(stream, done[-1])

    def _publish(self, stream: _SourceStream, streamed) -> LiveCondition:
        end = stream.ring_index(streamed.end_sample)
        captured = stream.source.capture_time(end - 1)
        now = time.monotonic()
        self._count += 1
        host = streamed.condition.detach().float().cpu()
        condition = host.to(self.device)  # uploaded once per hop, not once per frame
        finish_work(self.device)  # the upload is done before the renderer sees it
        live = LiveCondition(condition, streamed.weight, end, now if captured is None else captured, now,
                             self._count, host)
        if self.conditions.put(live):
            self.stats.add("dropped_conditions")
        self.stats.add("conditions")
        self.latest = live
        return live


def _check_streams(provider: ConditionProvider) -> None:
    """ValueError for a provider the encoder stage cannot stream (no window, or no streaming form)."""
    window_samples(provider)
    try:
        as_streamable(provider)
    except TypeError as error:
        raise ValueError(str(error)) from None


class _SourceStream:
    """One source's sound streaming into one provider: a ring reader, a resampler to the provider's
    rate (when the device captures at another), and the streaming conditioner. Stream sample 0 is ring
    index ``origin``: the start of the newest window of sound when the stream was opened."""

    def __init__(self, source: AudioSource, provider: ConditionProvider, text_space: TextSpace,
                 hop_seconds: float) -> None:
        self.source, self.provider = source, provider
        self.conditioner = StreamingConditioner(provider, text_space, hop_seconds=hop_seconds)
        written, history = source.ring.written, math.ceil(window_samples(provider) * source.sample_rate
                                                          / provider.sample_rate)
        self.origin = max(written - history, written - source.ring.capacity, 0)
        self.reader = source.ring.reader(self.origin)
        self.resample = StreamResampler(source.sample_rate, provider.sample_rate)

    def read(self) -> np.ndarray:
        """The new sound, mono with gain, at the provider's rate."""
        return self.resample(self.source.channel_map.mono(self.reader.read()))

    def ring_index(self, stream_sample: int) -> int:
        """The ring index of a stream sample (at the provider's rate)."""
        return self.origin + round(stream_sample * self.source.sample_rate / self.provider.sample_rate)


@dataclass(frozen=True)
class FrameBatch:
    """Frames rendered together, to be shown ``interval`` apart."""

    frames: tuple[Frame, ...]
    interval: float  # seconds between the frames' showing times
    fresh: bool  # the first frame is the first to use its condition


class RenderStage(Stage):
    """Renders frames at up to the control's fps from the newest scene and conditions.

    Each frame's condition is the slerp between the two newest conditions by the time since the
    newest arrived (over the interval between them), mixed on the compute device; the loudness
    envelope, followed at frame rate, scales g_s. When the control asks for another scene, the
    current one stays on screen until the new one is ready (at once when it was prefetched), then the
    new one comes in over the control's crossfade time (see :class:`~tpos_live.live.scenes.SceneFade`).
    A render that raises or gives NaN/Inf is counted and reported; the last good frame stays. While
    frozen, while the audio device is lost, and before the first scene and condition, nothing is
    rendered.

    Double buffered: this thread renders a batch and starts its download (``diffusion/frames.py``),
    then hands it to a finisher thread that waits for the download, checks it, fades it and delivers
    it, while this thread already renders the next batch. On a GPU it renders on a high-priority
    CUDA stream (see ``live/streams.py``).
    """

    name = "render"

    def __init__(self, stack: ModelStack, backend: Backend, control: LiveControl, source: AudioSource,
                 conditions: Mailbox[LiveCondition], scenes: SceneStage, cache: SceneCache, deliver,
                 stats: LiveStats, report: Reporter, loudness_window_seconds: float) -> None:
        super().__init__(report)
        self.stack, self.backend, self.control = stack, backend, control
        self.conditions, self.scenes, self.cache = conditions, scenes, cache
        self.deliver, self.stats = deliver, stats
        self.loudness_window_seconds = loudness_window_seconds
        self.follow_source(source)
        self.device = stack.device
        self.renderer: TPoSRenderer | None = None
        self.scene: Scene | None = None
        self.scene_key: tuple | None = None
        self.previous: LiveCondition | None = None
        self.newest: LiveCondition | None = None
        self.last_image: np.ndarray | None = None
        self._requested_key: tuple | None = None
        self._scene_settings: dict = {}  # the SCENE_SETTINGS values the scene on screen was made with
        self._fade: SceneFade | None = None
        self._envelope = (0.0, time.monotonic())  # follower state and its time
        self._mix: SlerpPair | None = None  # previous -> newest, angle computed once per condition
        self._used_condition = 0
        self._black = False
        self._slot = 0.0  # start of the next frame slot on the fps clock
        self._due = time.monotonic()
        self._stream = None  # the render's CUDA stream (None on the CPU)
        self._settings_key: tuple | None = None
        self._settings = None
        self._download = FrameDownload(self.device)
        self._rendered: queue.Queue[_Rendered] = queue.Queue(maxsize=1)  # one waiting, one being finished
        self.finisher = _Finisher(self)

    def start(self) -> RenderStage:
        self.finisher.start()
        return super().start()

    def stop(self, timeout: float | None = 30.0) -> None:
        super().stop(timeout)
        self.finisher.stop(timeout)

    def follow_source(self, source: AudioSource) -> None:
        """Read the loudness from ``source`` from the next frame on."""
        self.loudness_window = max(1, round(self.loudness_window_seconds * source.sample_rate))
        self.source = source

    def _run(self) -> None:
        with stage_stream(self.device, RENDER_PRIORITY) as stream:
            self._stream = stream
            while not self._stop.is_set():
                self._stop.wait(max(0.0, self._due - time.monotonic()))
                if self._stop.is_set():
                    return
                state = self.control.state()
                self._follow_scene(state)
                self._follow_conditions()
                if state.blackout:
                    self._show_black(state)
                elif state.frozen or self.source.state == "lost" or not self._ready():
                    self._stop.wait(0.01)
                else:
                    self._render(state)

    # ---- inputs ---------------------------------------------------------------------------------

    def _ready(self) -> bool:
        """Whether there is something to render (a scene and a condition)."""
        return self.scene is not None and self.newest is not None

    def _follow_scene(self, state: ControlState) -> None:
        key = state.scene_key
        if key == self.scene_key:
            return
        if key != self._requested_key:
            self._requested_key = key
            self.scenes.request(state)
        scene = self.cache.get(key)
        if scene is not None:
            adopt(scene, self._stream)  # prepared on the scene stage's stream, read on this one
            self._fade = start_fade(self.scene, self._fade, scene, self.last_image, state.crossfade_seconds,
                                    time.monotonic())
            self.scene, self.scene_key = scene, key
            self._scene_settings = {name: getattr(state.settings, name) for name in SCENE_SETTINGS}
            self.stats.add("scene_switches")
            if self._fade is not None and not isinstance(self._fade.source, np.ndarray):
                self.stats.add("morphs")

    def _follow_conditions(self) -> None:
        newest = self.conditions.take(timeout=0)
        if newest is None:
            return
        adopt(newest.condition, self._stream)
        self.previous, self.newest = self.newest, newest
        previous = self.previous
        self._mix = None if previous is None else SlerpPair(previous.condition, newest.condition,
                                                            previous.on_host, newest.on_host)

    # ---- one batch ------------------------------------------------------------------------------

    def _render(self, state: ControlState) -> None:
        settings = self._frame_settings(state)
        self._renderer_for(settings)
        batch, interval = settings.batch_frames, 1.0 / settings.fps
        times = self._batch_times(batch, interval)
        conditions, fractions = self._conditions_at(times)
        loudness, scales = self._loudness_and_scales(times, settings)
        newest, previous, fade = self.newest, self.previous, self._fade
        scene = self.scene if fade is None else fade.scene_at(self.scene, times)
        pending = self._guarded_render(scene, conditions, scales)
        if pending is not None:
            if fade is not None and fade.done(times):
                self._fade = None
            fresh = newest.index != self._used_condition
            self._used_condition = newest.index
            mix = newest.audio_time if previous is None else \
                (1 - fractions) * previous.audio_time + fractions * newest.audio_time
            self._hand_over(_Rendered(pending, fade, interval, fresh, newest, np.broadcast_to(mix, (batch,)),
                                      scales, loudness))
        self._pace(batch, interval)

    def _renderer_for(self, settings: RenderSettings) -> TPoSRenderer:
        renderer = self.renderer
        if renderer is None or renderer.settings != settings or renderer.backend is not self.backend:
            renderer = self.renderer = TPoSRenderer(self.stack, settings, self.backend)  # a cheap object, same models
        return renderer

    def _batch_times(self, batch: int, interval: float) -> np.ndarray:
        """The display times of the next batch's frames, from now."""
        started = time.monotonic()
        if self._slot < started - interval:  # after a pause (frozen, no audio, a fault): back on the clock
            self._slot = started
        return started + interval * np.arange(batch)

    def _loudness_and_scales(self, times: np.ndarray, settings: RenderSettings) -> tuple[np.ndarray, np.ndarray]:
        """The loudness envelope at ``times`` and the multiplier of g_s it gives."""
        loudness = self._loudness(times, settings)
        return loudness, guidance_multiplier(loudness, settings.envelope_depth)

    def _count_fault(self, what: str, error: Exception) -> None:
        self.stats.add("render_errors")
        self.report("error", f"{what} failed ({type(error).__name__}: {error}); keeping the last frame")
        self._stop.wait(0.05)  # a persistent fault must not spin the CPU

    def _frame_settings(self, state: ControlState):
        """The control's settings with the steps the scene was made for (made anew only on a change:
        validating a RenderSettings per frame costs more than the frame's host work should)."""
        key = (state.settings, tuple(self._scene_settings.items()))
        if key != self._settings_key:
            self._settings_key = key
            self._settings = replace(state.settings, **self._scene_settings)
        return self._settings

    def _guarded_render(self, scene: Scene, conditions: torch.Tensor, scales: np.ndarray) -> PendingFrames | None:
        renderer = self.renderer
        try:
            started, calls = time.perf_counter(), renderer.unet_calls
            latents = renderer.render_latents(scene, conditions, torch.from_numpy(scales))
            rendered = time.perf_counter()
            self.stats.add("unet_calls", renderer.unet_calls - calls)
            images = renderer.decode_images(latents)
            pending = self._download.start(images, latents, completion_fence(self.backend))  # NaN check rides along
        except Exception as error:  # noqa: BLE001 - counted and reported; the show goes on
            self._count_fault("rendering", error)
            return None
        self.stats.stage("render", rendered - started)
        self.stats.stage("decode", time.perf_counter() - rendered)
        return pending

    def _hand_over(self, rendered: _Rendered) -> None:
        """To the finisher; waits while it still has the previous batch waiting (double buffering)."""
        while not self._stop.is_set():
            try:
                self._rendered.put(rendered, timeout=0.05)
                return
            except queue.Full:
                continue

    def _conditions_at(self, times: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Slerp from the previous to the newest condition over the time between their arrivals; and
        each frame's fraction of the way."""
        newest, previous, mix = self.newest, self.previous, self._mix
        if previous is None or mix is None:
            return newest.condition.unsqueeze(0).expand(len(times), -1, -1), np.ones(len(times))
        span = max(newest.published - previous.published, 1e-3)
        fractions = np.clip((times - newest.published) / span, 0.0, 1.0)
        return mix(fractions), fractions

    def _loudness(self, times: np.ndarray, settings) -> np.ndarray:
        """The loudness envelope (0..1) at ``times``, following the newest audio with the settings'
        attack and release: what scales g_s (``1 - depth + depth * envelope``), and what the app shows."""
        mono, _ = self.source.mono_window(self.loudness_window)
        window = self.loudness_window / self.source.sample_rate
        level = frame_loudness(mono, self.source.sample_rate, np.array([window]), window_seconds=window)[0]
        state, last = self._envelope
        steps = np.diff(times, prepend=last).clip(min=0.0)
        envelope = attack_release(np.full(len(times), level), steps, settings.attack_seconds,
                                  settings.release_seconds, initial=state)
        self._envelope = (float(envelope[0]), float(times[0]))  # the later frames' times are predictions
        return envelope.astype(np.float64)

    def _pace(self, batch: int, interval: float) -> None:
        """Advance the frame clock by the batch's slots; slots a slow render let pass are dropped frames.

        The next batch starts at the next free slot (at once when the render overran), so the output
        holds the target fps when it can and otherwise counts what it missed.
        """
        self._slot += batch * interval
        overrun = time.monotonic() - self._slot
        if overrun > 0:
            missed = int(overrun / interval)
            self.stats.add("dropped_frames", missed)
            self._slot += missed * interval
        self._due = self._slot

    def _show_black(self, state: ControlState) -> None:
        if not self._black:
            self.finisher.drain()  # a frame rendered before the blackout must not come after it
            height, width = state.settings.height, state.settings.width
            black = np.zeros((height, width, 3), np.uint8)
            self.deliver(FrameBatch((Frame(black, time.monotonic(), None, None, 0, 0.0),), 0.0, False))
            self._black = True
            self._fade = None
        self._stop.wait(0.02)

    def _finish(self, rendered: _Rendered) -> None:
        """On the finisher thread: wait for the download, check it, fade it, deliver it."""
        try:
            images, finite = rendered.pending.result()
        except Exception as error:  # noqa: BLE001 - counted and reported like a render that raised
            self.stats.add("render_errors")
            self.report("error", f"finishing a frame failed ({type(error).__name__}: {error}); keeping the "
                                 f"last frame")
            self._stop.wait(0.05)
            return
        if not finite:
            self.stats.add("bad_frames", len(images))
            self.report("warning", "a render gave NaN or infinite values: keeping the last good frame")
            return
        ready = time.monotonic()
        if rendered.fade is not None:
            images = rendered.fade.images_at(images, ready + rendered.interval * np.arange(len(images)))
        self.last_image = images[-1]
        self._black = False
        newest = rendered.newest
        frames = tuple(Frame(image, ready, newest.audio_time, newest.published, newest.index, float(scale),
                             float(level), float(mix))
                       for image, scale, level, mix in zip(images, rendered.scales, rendered.loudness,
                                                           rendered.mix_audio_times, strict=True))
        self.deliver(FrameBatch(frames, rendered.interval, rendered.fresh))


@dataclass(frozen=True)
class _Rendered:
    """A batch on its way from the render thread to the finisher."""

    pending: PendingFrames
    fade: SceneFade | None
    interval: float
    fresh: bool
    newest: LiveCondition
    mix_audio_times: np.ndarray
    scales: np.ndarray
    loudness: np.ndarray


class _Finisher(Stage):
    """The render stage's second thread: finishes each batch while the next one renders."""

    name = "render-finisher"

    def __init__(self, stage: RenderStage) -> None:
        super().__init__(stage.report)
        self.stage = stage

    def _run(self) -> None:
        rendered = self.stage._rendered
        while not self._stop.is_set():
            try:
                item = rendered.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                self.stage._finish(item)
            finally:
                rendered.task_done()

    def drain(self) -> None:
        """Wait until every batch handed over has been finished."""
        while not self._stop.is_set() and self.stage._rendered.unfinished_tasks:
            self._stop.wait(0.002)


class Presenter(Stage):
    """Shows the frames of a rendered batch one interval apart; a newer batch replaces what is left."""

    name = "presenter"

    def __init__(self, batches: Mailbox[FrameBatch], publish, stats: LiveStats, report: Reporter) -> None:
        super().__init__(report)
        self.batches, self.publish, self.stats = batches, publish, stats

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self.batches.take(timeout=0.1)
            if batch is None:
                continue
            version, _ = self.batches.peek()
            start = time.monotonic()
            for i, frame in enumerate(batch.frames):
                if self._stop.wait(max(0.0, start + i * batch.interval - time.monotonic())):
                    return
                if self.batches.peek()[0] != version:  # a newer batch is waiting: the rest is stale
                    self.stats.add("dropped_frames", len(batch.frames) - i)
                    break
                self.publish(frame, batch.fresh and i == 0)


class Recorder(Stage):
    """Records the program audio and the frames on screen to an mp4, in sync.

    The audio clock drives the video: after each chunk of audio, as many frames are written (the
    newest frame, repeated when rendering is slower than ``fps``) as that audio spans, so the two
    streams never drift apart by more than a frame. While the device is lost, neither advances. The
    mp4 is fragmented, so its index does not grow in memory over a show.
    """

    name = "recorder"

    def __init__(self, path: str | Path, fps: float, width: int, height: int, source: AudioSource,
                 frames: Mailbox[Frame], report: Reporter) -> None:
        super().__init__(report)
        self.source, self.frames = source, frames
        self.writer = VideoWriter(path, fps, width, height, audio_sample_rate=source.sample_rate,
                                  audio_channels=source.channel_map.program_channels,
                                  fragmented=True)  # a show lasts hours: memory must not grow with it
        self.path = Path(path)
        self.reader = source.ring.reader()
        self.samples = 0
        self.failed = False
        self._black = np.zeros((height, width, 3), np.uint8)
        self._lock = threading.Lock()  # a pump and a source swap never overlap

    def can_follow(self, source: AudioSource) -> bool:
        """Whether the file can go on with ``source``'s audio (same rate and channel count)."""
        return (source.sample_rate == self.source.sample_rate
                and source.channel_map.program_channels == self.source.channel_map.program_channels)

    def follow_source(self, source: AudioSource) -> None:
        """Record ``source``'s audio from now on (check :meth:`can_follow` first)."""
        with self._lock:
            self._pump_locked()  # what the old source captured up to now
            self.source, self.reader = source, source.ring.reader()

    def finish(self) -> Path | None:
        """Stop, write what is left and close the file. Returns its path (None if nothing was recorded)."""
        self.stop()
        if self.failed:
            return None
        try:
            self._pump()
            if self.writer.frames_written == 0:
                self.writer.abort()
                self.report("warning", f"nothing was recorded to {self.path}: it stopped before one frame")
                return None
            return self.writer.close()
        except Exception as error:  # noqa: BLE001 - reported; the file is discarded
            self.writer.abort()
            self.report("error", f"finishing the recording {self.path} failed ({error})")
            return None

    def _run(self) -> None:
        while not self._stop.wait(0.02) and not self.failed:
            try:
                self._pump()
            except Exception as error:  # noqa: BLE001 - e.g. disk full: the show goes on without recording
                self.failed = True
                self.writer.abort()
                self.report("error", f"recording to {self.path} failed ({error}); it was stopped")

    def _pump(self) -> None:
        with self._lock:
            self._pump_locked()

    def _pump_locked(self) -> None:
        frames = self.reader.read()
        if len(frames):
            self.writer.write_audio(self.source.channel_map.program(frames).T)
            self.samples += len(frames)
        fps = self.writer.fps
        due = self.samples * fps.numerator // (self.source.sample_rate * fps.denominator)
        _, frame = self.frames.peek()
        image = frame.image if frame is not None else self._black
        while self.writer.frames_written < due:
            self.writer.write_frame(image)

