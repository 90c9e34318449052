"""Keeping a PortAudio stream alive: noticing when it dies or stalls, reporting, reopening with backoff."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tpos_live.audio.sources import RingSource
from tpos_live.errors import first_line
from tpos_live.worker import Stage


@dataclass(frozen=True)
class StreamTiming:
    stall_seconds: float  # no audio for this long: lost
    first_audio_seconds: float  # no audio this long after opening: lost (devices take a while to start)
    first_retry_seconds: float
    longest_retry_seconds: float


class StreamSupervisor(Stage):
    """Keeps a PortAudio stream alive: notices when it dies or stalls, reports, reopens with backoff.

    ``open_stream(on_finished)`` opens and starts a stream whose callback writes to the source's ring
    and which calls ``on_finished`` when it ends; it raises on failure. A reopened stream counts as
    back only once audio arrives through it (a device can open well before it delivers).
    """

    name = "audio-supervisor"

    def __init__(self, source: RingSource, open_stream: Callable[[Callable[[], None]], object], name: str,
                 timing: StreamTiming, before_reopen: Callable[[], None]) -> None:
        super().__init__(source.report)
        self.source, self.open_stream, self.device_name = source, open_stream, name
        self.timing = timing
        self.before_reopen = before_reopen
        self.stream = None
        self._ended = threading.Event()
        self._opened_at = 0.0
        self._lost_at = 0.0

    def start(self) -> None:
        self._open()
        self.source.state = "running"
        super().start()

    def stop(self, timeout: float | None = 30.0) -> None:
        super().stop(timeout)
        self._close()

    def _open(self) -> None:
        self._ended.clear()
        self.stream = self.open_stream(self._ended.set)
        self._opened_at = time.monotonic()
        self.source.input_latency = float(getattr(self.stream, "latency", 0.0) or 0.0)

    def _close(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(Exception):  # the device may be gone: closing what is left cannot fail
                stream.abort()
            with contextlib.suppress(Exception):
                stream.close()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            problem = self._problem()
            if problem is None:
                if self.source.state == "lost" and self._heard_since_open():
                    self.source.state = "running"
                    self.source.report("info", f"audio device '{self.device_name}' is back after "
                                               f"{time.monotonic() - self._lost_at:.1f} s (reopened)")
                continue
            if self.source.state != "lost":
                self.source.state = "lost"
                self.source.losses += 1
                self._lost_at = time.monotonic()
                self.source.report("warning", f"audio device '{self.device_name}' {problem}: keeping the last "
                                              f"frame, reopening it when it returns")
            self._close()
            self._reopen()

    def _heard_since_open(self) -> bool:
        last = self.source.ring.last_write_time
        return last is not None and last > self._opened_at

    def _problem(self) -> str | None:
        if self.source.state == "finished":
            return None
        if self._ended.is_set():
            return "stopped (disconnected or failed)"
        now = time.monotonic()
        if not self._heard_since_open():
            waited = now - self._opened_at
            late = waited > self.timing.first_audio_seconds
            return f"delivered no audio in {waited:.1f} s" if late else None
        since = now - self.source.ring.last_write_time
        return f"delivered no audio for {since:.1f} s" if since > self.timing.stall_seconds else None

    def _reopen(self) -> None:
        """Try to open again, waiting longer after each failure, until it opens (or we are stopped)."""
        delay, said = self.timing.first_retry_seconds, False
        while not self._stop.wait(delay):
            try:
                self.before_reopen()
                self._open()
                return
            except Exception as error:  # noqa: BLE001 - any failure to open means "not back yet"
                self._close()
                if not said:
                    said = True
                    self.source.report("info", f"audio device '{self.device_name}' is not back yet "
                                               f"({first_line(error)}); retrying with backoff")
                delay = min(delay * 2, self.timing.longest_retry_seconds)
