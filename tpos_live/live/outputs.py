"""Where delivered frames go besides the frames mailbox: the presenter that spaces a batch's frames out,
and the recorder that writes the frames on screen and the sound to an mp4."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tpos_live.live.frames import Frame, FrameBatch
from tpos_live.live.mailbox import Mailbox
from tpos_live.live.source_feed import SourceFeed
from tpos_live.live.stats import LiveStats
from tpos_live.reporting import Reporter
from tpos_live.video.writer import VideoWriter
from tpos_live.worker import Stage


class Presenter(Stage):
    """Shows the frames of a rendered batch one interval apart; a newer batch replaces what is left."""

    name = "presenter"

    def __init__(self, batches: Mailbox[FrameBatch], publish: Callable[[Frame, bool], None], stats: LiveStats,
                 report: Reporter) -> None:
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

    When the feed's source is swapped, the recording goes on with the new source's sound from its next
    pump, after what the old one captured until then; the engine finishes the recording first when the
    new source does not fit it (:meth:`can_follow`).
    """

    name = "recorder"

    def __init__(self, path: str | Path, fps: float, width: int, height: int, sound: SourceFeed,
                 frames: Mailbox[Frame], report: Reporter) -> None:
        super().__init__(report)
        self.sound, self.frames = sound, frames
        self.source = source = sound.current  # the source recorded now
        self.writer = VideoWriter(path, fps, width, height, audio_sample_rate=source.sample_rate,
                                  audio_channels=source.channel_map.program_channels,
                                  fragmented=True)  # a show lasts hours: memory must not grow with it
        self.path = Path(path)
        self.reader = source.ring.reader()
        self.samples = 0
        self.failed = False
        self._black = np.zeros((height, width, 3), np.uint8)
        self._lock = threading.Lock()  # the pumps of this thread and of finish() never overlap

    def can_follow(self, source) -> bool:
        """Whether the file can go on with ``source``'s audio (same rate and channel count)."""
        return (source.sample_rate == self.source.sample_rate
                and source.channel_map.program_channels == self.source.channel_map.program_channels)

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
            self._write_sound()
            current, start = self.sound.read_from()
            if current is not self.source and self.can_follow(current):
                self.source, self.reader = current, current.ring.reader(start)
            self._write_frames()

    def _write_sound(self) -> None:
        frames = self.reader.read()
        if len(frames):
            self.writer.write_audio(self.source.channel_map.program(frames).T)
            self.samples += len(frames)

    def _write_frames(self) -> None:
        fps = self.writer.fps
        due = self.samples * fps.numerator // (self.source.sample_rate * fps.denominator)
        _, frame = self.frames.peek()
        image = frame.image if frame is not None else self._black
        while self.writer.frames_written < due:
            self.writer.write_frame(image)
