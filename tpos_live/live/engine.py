"""The live engine: sound in, audio-reactive frames out, continuously (docs/design.md, "Real-time design").

    engine = LiveEngine(stack, settings, provider, source, prompt="neon city at night", report=log)
    engine.start()
    number, frame = engine.wait_frame(timeout=30)   # the first frame
    engine.control.set_prompt("a forest")        # crossfaded in when ready
    engine.prefetch([engine.control.state().with_scene("a desert")])   # ready before it is wanted
    engine.set_source(other_source)              # the picture goes on; the sound comes from elsewhere
    engine.start_recording("set1.mp4")
    print(engine.stats().line())
    engine.stop()                                # finishes the recording

Threads: the source's audio callback (copies into the ring), the encoder (one condition per hop,
``encoder_stage.py``), the scene preparer (z^T, prompts, z^delta, in the background, into a small cache,
``scenes.py``), the frame stage (frames at up to the target fps) and its finisher (downloads, checks and
delivers each batch while the next one renders, ``finisher.py``), a presenter when frames are rendered
in batches, and a recorder while recording (``outputs.py``). Where a frame has one guided step, the frame
stage composes the frames from keyframes (``compose.py``) and a keyframe stage runs the UNet once per
condition (``keyframes.py``); with several guided steps every frame runs the UNet (``render_stage.py``;
:meth:`LiveEngine.describe_frames` says which). They hand over through latest-wins mailboxes, and read
the sound through one :class:`~tpos_live.live.source_feed.SourceFeed`. Everything a performer may change while it runs
changes without stopping the frames: the knobs and the scene (:attr:`control`), the sound source
(:meth:`set_source`) and the audio conditioning (:meth:`set_provider`). The engine never prints: it
reports through ``report``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from tpos_live.audio.sources import AudioSource
from tpos_live.backends.torch_backend import TorchBackend
from tpos_live.conditioning.base import ConditionProvider
from tpos_live.config import RenderSettings
from tpos_live.diffusion.backend import Backend
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.diffusion.stack import ModelStack
from tpos_live.errors import UserError
from tpos_live.live.compose import ComposeStage
from tpos_live.live.context import StageContext
from tpos_live.live.control import ControlState, LiveControl
from tpos_live.live.encoder_stage import EncoderStage, LiveCondition, window_samples
from tpos_live.live.frame_stage import FrameStage
from tpos_live.live.frames import Frame, FrameBatch
from tpos_live.live.keyframes import Keyframes, KeyframeStage
from tpos_live.live.loudness import LoudnessFollower
from tpos_live.live.mailbox import Mailbox
from tpos_live.live.memory import HeapTrimmer, freeze_long_lived, freeze_newly_loaded, malloc_trim, thaw_long_lived
from tpos_live.live.outputs import Presenter, Recorder
from tpos_live.live.render_stage import RenderStage
from tpos_live.live.scenes import SceneCache, SceneStage
from tpos_live.live.settings import LiveSettings
from tpos_live.live.source_feed import SourceFeed
from tpos_live.live.stats import LiveStats, StatsSnapshot
from tpos_live.reporting import Reporter, ignore_report


class LiveEngine:
    """Runs the live chain on one model stack, one audio provider and one audio source.

    Args:
        stack: the diffusion models.
        settings: the starting render settings (size and sampler stay fixed; the steps and the knobs
            can be changed through :attr:`control`).
        provider: turns audio windows into conditions; its width must match the stack's text space.
        source: where the sound comes from (started and stopped with the engine).
        prompt, negative_prompt: the starting scene.
        live: how the stages run.
        init_image: start every scene from this image instead of noise alone (``control.set_init_image``
            changes it).
        report: ``report(level, message)`` for warnings and faults (none by default).
        backend: runs the UNet and the decoder for the scene and render stages (None: the stack's torch
            modules, eager); :meth:`set_backend` swaps it while running.
        renderer: the composition root's renderer of ``stack``, ``settings`` and ``backend``, which answers
            what the engine asks before its stages start (None: built here). Each stage thread renders with
            a renderer of its own, rebuilt when the knobs change its settings.
    """

    def __init__(self, stack: ModelStack, settings: RenderSettings, provider: ConditionProvider,
                 source: AudioSource, prompt: str, negative_prompt: str = "",
                 live: LiveSettings | None = None, init_image: str | Path | None = None,
                 report: Reporter | None = None, backend: Backend | None = None,
                 renderer: TPoSRenderer | None = None) -> None:
        self.live = live or LiveSettings()
        self.report = report or ignore_report
        self.backend = backend or TorchBackend(stack, settings.decoder)
        if renderer is None:
            renderer = TPoSRenderer(stack, settings, self.backend)  # refuses sizes and decoders the stack lacks
        self.text_space = renderer.text_space()
        self.uses_keyframes = renderer.uses_keyframes
        self._describe_frames = renderer.describe_frames
        self._check_provider(provider, stack.name)
        self.stack, self.settings, self.provider = stack, settings, provider
        self.sound = SourceFeed(source)
        try:
            self.control = LiveControl(settings, prompt, negative_prompt, init_image, self.live.crossfade_seconds)
        except ValueError as error:
            raise UserError(str(error)) from None
        self.statistics = LiveStats(self.live.stats_window_seconds)
        self.frames: Mailbox[Frame] = Mailbox()
        self.scene_cache = SceneCache()
        self._conditions: Mailbox[LiveCondition] = Mailbox()
        self._batches: Mailbox[FrameBatch] = Mailbox()
        self._keyframes: Mailbox[Keyframes] = Mailbox()
        self._recorder: Recorder | None = None
        self._lock = threading.Lock()
        self._running = False
        self._started = False
        self._make_stages()

    def _make_stages(self) -> None:
        live, stats, report = self.live, self.statistics, self.report
        self.encoder = EncoderStage(self.provider, self.text_space, self.sound, live.hop_seconds,
                                    self._conditions, stats, report, device=self.stack.device)
        self.scene_stage = SceneStage(self.stack, self.backend, self.scene_cache, stats, report)
        context = StageContext(self.stack, self.control, self.scene_stage, stats, report)
        loudness = LoudnessFollower(self.sound, live.loudness_window_seconds)
        # Batches go through a presenter that spaces their frames out; single frames go straight out.
        self.presenter = None
        deliver = self._deliver_now
        if self.settings.batch_frames > 1:
            self.presenter = Presenter(self._batches, self._publish, stats, report)
            deliver = self._batches.put
        self.keyframe_stage = None
        self.frame_stage: FrameStage
        if self.uses_keyframes:
            self.keyframe_stage = KeyframeStage(context, self.backend, self._conditions, self._keyframes)
            self.frame_stage = ComposeStage(context, self.backend, loudness, self._keyframes, deliver)
        else:
            self.frame_stage = RenderStage(context, self.backend, loudness, self._conditions, deliver)
        self.heap_trimmer = self._make_heap_trimmer()

    def _make_heap_trimmer(self) -> HeapTrimmer | None:
        if self.live.trim_seconds == 0:
            return None
        trim = malloc_trim()
        if trim is None:
            self.report("info", "this C library has no malloc_trim: freed memory stays with the process "
                                "(trimming is glibc's)")
            return None
        return HeapTrimmer(trim, self.live.trim_seconds, self.report)

    # ---- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the audio source and every stage; returns at once (frames follow when the first scene
        and condition are ready: see :meth:`wait_frame`). An engine runs once: after :meth:`stop`,
        make a new one (with a new source)."""
        with self._lock:
            if self._started:
                raise RuntimeError("this engine has already been started: make a new one")
            self._started = True
            self.source.start()
            freeze_long_lived()  # a full garbage collection must not stop the frames (live/memory.py)
            for stage in (self.scene_stage, self.encoder, self.keyframe_stage, self.frame_stage, self.presenter,
                          self.heap_trimmer):
                if stage is not None:
                    stage.start()
            self._running = True

    def stop(self) -> Path | None:
        """Stop every stage and the source; finishes a recording and returns its path (if any)."""
        with self._lock:
            if not self._running:
                return None
            self._running = False
            for stage in (self.encoder, self.keyframe_stage, self.frame_stage, self.presenter, self.scene_stage,
                          self.heap_trimmer):
                if stage is not None:
                    stage.stop()
            thaw_long_lived()
            recorded = self._finish_recording()
            self.source.stop()
            return recorded

    @property
    def source(self) -> AudioSource:
        """The source the sound comes from now."""
        return self.sound.current

    @property
    def running(self) -> bool:
        return self._running

    def __enter__(self) -> LiveEngine:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- changing what goes in --------------------------------------------------------------------

    def prefetch(self, states: Iterable[ControlState]) -> None:
        """Prepare the scenes of these states in the background, in this order, whenever no scene is
        urgent (replaces the previous list): a switch to one of them then starts at the next frame.
        Make them with ``control.state().with_scene(...)``."""
        self.scene_stage.prefetch(states)

    def set_source(self, source: AudioSource) -> AudioSource:
        """Take the sound from ``source`` from now on, without stopping the frames.

        Starts ``source`` here (UserError if it cannot be opened: then nothing changes). A recording
        goes on with the new sound when its rate and channels match; otherwise it is finished (and
        reported). Returns the previous source, still running: stop it, which may take a moment.
        """
        source.start()
        with self._lock:
            if not self._running:
                source.stop()
                raise UserError("the engine has stopped: the new sound source was closed again")
            recorder = self._recorder
            if recorder is not None and not recorder.can_follow(source):
                written = self._finish_recording()
                self.report("warning", f"the recording ended ({written}): the new sound source runs at "
                                       f"{source.sample_rate} Hz, {source.channel_map.program_channels} ch")
            old = self.sound.swap(source)  # every reader follows from its next read
        return old

    def set_provider(self, provider: ConditionProvider) -> ConditionProvider:
        """Condition on ``provider`` from the next encoder hop (UserError if it does not fit the model:
        then nothing changes); the frames slerp from the old conditions to the new. Returns the old one."""
        self._check_provider(provider, self.stack.name)
        with self._lock:
            old, self.provider = self.provider, provider
            self.encoder.follow_provider(provider)
        freeze_newly_loaded()
        return old

    def set_backend(self, backend: Backend) -> Backend:
        """Run the UNet and the decoder on ``backend`` from the next scene and frame on (the scenes
        already prepared stay: they are latents and encodings, not tied to a runtime). Returns the old."""
        if backend.decoder != self.settings.decoder:
            raise UserError(f"backend {backend.name} runs the {backend.decoder} decoder but the engine "
                            f"decodes with {self.settings.decoder}: make it for that decoder")
        with self._lock:
            old, self.backend = self.backend, backend
            self.scene_stage.backend = backend
            self.frame_stage.backend = backend
            if self.keyframe_stage is not None:
                self.keyframe_stage.backend = backend
        freeze_newly_loaded()
        return old

    def _check_provider(self, provider: ConditionProvider, model: str) -> None:
        try:
            window_samples(provider)
        except ValueError as error:
            raise UserError(f"{error}: it cannot condition the live engine") from None
        if provider.embed_dim != self.text_space.dim:
            raise UserError(f"audio encoder '{provider.name}' makes {provider.embed_dim}-d conditions but "
                            f"the model '{model}' expects {self.text_space.dim}-d: use an encoder made "
                            f"for this model's text encoder")

    # ---- what comes out ---------------------------------------------------------------------------

    def describe_frames(self) -> str:
        """One line naming how the frames are made: "frames: keyframes (one UNet call per condition, 3.9/s)"
        (the rate measured over the stats window; before there is one, the hop's: a keyframe per condition)
        or "frames: per frame (2 guided steps)". The path is picked at the start from the starting settings:
        keyframes where they are exact (one guided step) unless ``settings.frames`` says otherwise."""
        if not self.uses_keyframes:
            return self._describe_frames(None)
        return self._describe_frames(self.stats().keyframes_per_second or 1 / self.live.hop_seconds)

    def wait_frame(self, after: int = 0, timeout: float | None = None) -> tuple[int, Frame | None]:
        """Wait for a frame newer than number ``after`` (frames count 1, 2, ...); ``(number, frame)``,
        unchanged on timeout. Follow the stream with ``n, frame = engine.wait_frame(n, 1.0)``."""
        return self.frames.wait_newer(after, timeout)

    def latest_condition(self) -> LiveCondition | None:
        """The encoder's newest condition (None before the first)."""
        return self.encoder.latest

    def stats(self) -> StatsSnapshot:
        """Frame rate, stage times, latency, drops and faults over the last stats window."""
        return self.statistics.snapshot(overflows=self.source.overflows, device_losses=self.source.losses,
                                        source_state=self.source.state,
                                        input_latency=getattr(self.source, "device_latency", None))

    # ---- recording --------------------------------------------------------------------------------

    def start_recording(self, path: str | Path, fps: float | None = None) -> None:
        """Record the frames on screen and the program audio to an mp4 (at ``fps``, default the
        settings' fps). Raises UserError for an unwritable path."""
        with self._lock:
            if self._recorder is not None:
                raise RuntimeError("already recording: stop_recording() first")
            recorder = Recorder(path, fps or self.settings.fps, self.settings.width, self.settings.height,
                                self.sound, self.frames, self.report)
            recorder.start()
            self._recorder = recorder

    @property
    def recording(self) -> Path | None:
        """The file being recorded (None when not recording)."""
        recorder = self._recorder
        return None if recorder is None else recorder.path

    def stop_recording(self) -> Path | None:
        """Finish the recording; returns the file written (None if there was none or it failed)."""
        with self._lock:
            return self._finish_recording()

    def _finish_recording(self) -> Path | None:
        recorder, self._recorder = self._recorder, None
        return recorder.finish() if recorder is not None else None

    # ---- frame delivery ---------------------------------------------------------------------------

    def _deliver_now(self, batch: FrameBatch) -> None:
        for i, frame in enumerate(batch.frames):
            self._publish(frame, batch.fresh and i == 0)

    def _publish(self, frame: Frame, fresh: bool) -> None:
        """Put a frame on screen; its latency is the age of the condition mix it shows (every frame)."""
        now = time.monotonic()
        frame = replace(frame, ready=now)
        self.frames.put(frame)
        latency = now - frame.mix_audio_time if frame.mix_audio_time is not None else None
        self.statistics.frame(now, latency)
