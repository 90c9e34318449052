"""What the two frame stages share: the frame clock, the loudness, the renderer, the hand-over and blackout.

:class:`~tpos_live.live.render_stage.RenderStage` (per frame: a UNet call for every frame) and
:class:`~tpos_live.live.compose.ComposeStage` (keyframes: frames composed from them) are both a
:class:`FrameStage`: each frame slot on the fps clock, it follows the control, makes a batch of frames
and starts their download, then hands the batch to its :class:`~tpos_live.live.finisher.Finisher`, which
delivers it while the next batch is made. On a GPU it runs on a high-priority CUDA stream
(``live/streams.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from tpos_live.config import RenderSettings
from tpos_live.diffusion.backend import Backend, completion_fence
from tpos_live.diffusion.frames import FrameDownload, PendingFrames
from tpos_live.diffusion.renderer import TPoSRenderer
from tpos_live.live.context import StageContext
from tpos_live.live.control import ControlState
from tpos_live.live.finisher import BlackFrame, Finisher, RenderedBatch
from tpos_live.live.frames import FrameBatch
from tpos_live.live.loudness import LoudnessFollower
from tpos_live.live.streams import RENDER_PRIORITY, stage_stream
from tpos_live.worker import Stage


class FrameStage(Stage):
    """Frames at up to the control's fps. While frozen, while the audio device is lost, and before there is
    something to render (:meth:`_ready`), nothing is rendered; during a blackout, one black frame is shown.

    Subclasses follow their inputs (:meth:`_follow`) and make one batch (:meth:`_render`).
    """

    name = "frames"

    def __init__(self, context: StageContext, backend: Backend, loudness: LoudnessFollower,
                 deliver: Callable[[FrameBatch], object]) -> None:
        super().__init__(context.report)
        self.context, self.backend, self.loudness = context, backend, loudness
        self.control, self.stats = context.control, context.stats
        self.device = context.device
        self.renderer: TPoSRenderer | None = None
        self.finisher = Finisher(deliver, context.stats, context.report)
        self._scene_settings: dict = {}  # the SCENE_SETTINGS values the scene on screen was made with
        self._used_condition = 0
        self._black = False  # a black frame was handed over and nothing rendered since
        self._slot = 0.0  # start of the next frame slot on the fps clock
        self._due = time.monotonic()
        self._stream = None  # the stage's CUDA stream (None on the CPU)
        self._settings_key: tuple | None = None
        self._settings = None
        self._download = FrameDownload(self.device)

    def start(self) -> FrameStage:
        self.finisher.start()
        return super().start()

    def stop(self, timeout: float | None = 30.0) -> None:
        super().stop(timeout)
        self.finisher.stop(timeout)

    def _run(self) -> None:
        with stage_stream(self.device, RENDER_PRIORITY) as stream:
            self._stream = stream
            while not self._stop.is_set():
                self._stop.wait(max(0.0, self._due - time.monotonic()))
                if self._stop.is_set():
                    return
                state = self.control.state()
                self._follow(state)
                if state.blackout:
                    self._show_black(state)
                elif state.frozen or self.loudness.source_lost or not self._ready():
                    self._stop.wait(0.01)
                else:
                    self._render(state)

    # ---- what a frame stage says --------------------------------------------------------------------

    def _ready(self) -> bool:
        """Whether there is something to render."""
        raise NotImplementedError

    def _follow(self, state: ControlState) -> None:
        """Take up what changed since the last frame (the scene, the conditions)."""
        raise NotImplementedError

    def _render(self, state: ControlState) -> None:
        """Make one batch and hand it over (:meth:`_hand_over`), then :meth:`_pace`."""
        raise NotImplementedError

    def _on_blackout(self) -> None:
        """What a blackout ends besides the picture (a fade in progress)."""

    # ---- shared steps of a batch ----------------------------------------------------------------------

    def _frame_settings(self, state: ControlState) -> RenderSettings:
        """The control's settings with the steps the scene was made for (made anew only on a change:
        validating a RenderSettings per frame costs more than the frame's host work should)."""
        key = (state.settings, tuple(self._scene_settings.items()))
        if key != self._settings_key:
            self._settings_key = key
            self._settings = replace(state.settings, **self._scene_settings)
        return self._settings

    def _renderer_for(self, settings: RenderSettings) -> TPoSRenderer:
        renderer = self.renderer
        if renderer is None or renderer.settings != settings or renderer.backend is not self.backend:
            renderer = self.renderer = TPoSRenderer(self.context.stack, settings, self.backend)  # cheap, same models
        return renderer

    def _batch_times(self, batch: int, interval: float) -> np.ndarray:
        """The display times of the next batch's frames, from now."""
        started = time.monotonic()
        if self._slot < started - interval:  # after a pause (frozen, no audio, a fault): back on the clock
            self._slot = started
        return started + interval * np.arange(batch)

    def _count_fault(self, what: str, error: Exception) -> None:
        self.stats.add("render_errors")
        self.report("error", f"{what} failed ({type(error).__name__}: {error}); keeping the last frame")
        self._stop.wait(0.05)  # a persistent fault must not spin the CPU

    def _start_frames(self, what: str, timed: str, make: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                      decode: Callable[[torch.Tensor], torch.Tensor]) -> PendingFrames | None:
        """Make a batch and start its download: ``make()`` gives the latents to check for NaN/Inf and what
        to decode (timed as ``timed``), ``decode`` the images. A fault is counted and reported (None)."""
        try:
            started = time.perf_counter()
            latents, to_decode = make()
            made = time.perf_counter()
            images = decode(to_decode)
            pending = self._download.start(images, latents, completion_fence(self.backend))  # NaN check rides along
        except Exception as error:  # noqa: BLE001 - counted and reported; the show goes on
            self._count_fault(what, error)
            return None
        self.stats.stage(timed, made - started)
        self.stats.stage("decode", time.perf_counter() - made)
        return pending

    def _hand_over(self, rendered: RenderedBatch) -> None:
        """To the finisher; waits while it still has the previous batch waiting (double buffering)."""
        self._black = False
        self.finisher.hand_over(rendered, self._stop)

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
            # through the finisher: a frame rendered before the blackout cannot come after it
            self.finisher.hand_over(BlackFrame(state.settings.height, state.settings.width), self._stop)
            self._black = True
            self._on_blackout()
        self._stop.wait(0.02)
