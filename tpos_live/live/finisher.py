"""The frame stages' second thread: it finishes each batch while the next one renders.

A frame stage renders a batch and starts its download (``diffusion/frames.py``), then hands it over
here; the finisher waits for the download, checks it, fades it and delivers it. Black frames go the same
way, so nothing rendered before a blackout is delivered after it. The queue holds one batch: one waits
while one is being finished (double buffering), and the finisher alone takes from it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tpos_live.diffusion.frames import PendingFrames
from tpos_live.live.encoder_stage import LiveCondition
from tpos_live.live.frames import Frame, FrameBatch
from tpos_live.live.scenes import SceneFade
from tpos_live.live.stats import LiveStats
from tpos_live.reporting import Reporter
from tpos_live.worker import Stage


@dataclass(frozen=True)
class RenderedBatch:
    """A batch on its way from a frame stage to the finisher."""

    pending: PendingFrames
    fade: SceneFade | None  # a pixel fade over the frames (None: none)
    interval: float
    fresh: bool
    newest: LiveCondition
    mix_audio_times: np.ndarray
    scales: np.ndarray
    loudness: np.ndarray


@dataclass(frozen=True)
class BlackFrame:
    """A black frame of this size, for a blackout."""

    height: int
    width: int


class Finisher(Stage):
    """Finishes what a frame stage hands over (:meth:`hand_over`), in order, and delivers it."""

    name = "render-finisher"

    def __init__(self, deliver: Callable[[FrameBatch], object], stats: LiveStats, report: Reporter) -> None:
        super().__init__(report)
        self.deliver, self.stats = deliver, stats
        self.last_image: np.ndarray | None = None  # the newest frame delivered (for a pixel fade from it)
        self._handed: queue.Queue[RenderedBatch | BlackFrame] = queue.Queue(maxsize=1)

    def hand_over(self, item: RenderedBatch | BlackFrame, cancel: threading.Event) -> None:
        """Queue ``item``; waits while the previous one still waits (until ``cancel`` is set)."""
        while not cancel.is_set():
            try:
                self._handed.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._handed.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, BlackFrame):
                self._deliver_black(item)
            else:
                self._finish(item)

    def _deliver_black(self, black: BlackFrame) -> None:
        image = np.zeros((black.height, black.width, 3), np.uint8)
        self.deliver(FrameBatch((Frame(image, time.monotonic(), None, None, 0, 0.0),), 0.0, False))

    def _finish(self, rendered: RenderedBatch) -> None:
        """Wait for the download, check it, fade it, deliver it."""
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
        newest = rendered.newest
        frames = tuple(Frame(image, ready, newest.audio_time, newest.published, newest.index, float(scale),
                             float(level), float(mix))
                       for image, scale, level, mix in zip(images, rendered.scales, rendered.loudness,
                                                           rendered.mix_audio_times, strict=True))
        self.deliver(FrameBatch(frames, rendered.interval, rendered.fresh))
