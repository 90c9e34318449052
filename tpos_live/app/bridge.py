"""The bridge between the live engine's threads and the Qt GUI thread.

The GUI never runs a model: the engine renders on its own threads and :class:`EngineBridge` pulls
what is new on a timer (the latest frame, the newest condition, the audio level and spectrum, the
stats) and hands it to widgets as Qt signals. Reports from the engine's threads are queued and
emitted from the same timer, on the GUI thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from PySide6.QtCore import QObject, Qt, QTimer, Signal

from tpos_live.control.preset_bank import PresetBank
from tpos_live.live.engine import LiveEngine

SPECTRUM_BINS = 128  # rows of the scrolling spectrogram
SPECTRUM_SAMPLES = 1024  # samples per spectrogram column
SPECTRUM_FLOOR_DB = -80.0  # fixed levels of the spectrogram: floor .. 0 dB
LEVEL_FLOOR_DB = -60.0


class ReportQueue:
    """A thread-safe reporter (``report(level, message)``) that queues messages for the GUI thread to take."""

    def __init__(self, keep: int = 200) -> None:
        self._messages: deque[tuple[str, str]] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def __call__(self, level: str, message: str) -> None:
        with self._lock:
            self._messages.append((level, message))

    def take(self) -> list[tuple[str, str]]:
        with self._lock:
            messages = list(self._messages)
            self._messages.clear()
            return messages


def log_spectrum(mono: np.ndarray, bins: int = SPECTRUM_BINS) -> np.ndarray:
    """``bins`` dB magnitudes (0 dB: a full-scale sine) of a Hann-windowed block, low to high, clipped
    to the spectrogram's fixed levels."""
    window = np.hanning(len(mono)).astype(np.float32)
    magnitude = np.abs(np.fft.rfft(mono * window))[1:] * (2.0 / window.sum())
    # fold the FFT bins onto ``bins`` rows on a log-frequency axis (bass gets more rows, as heard)
    edges = np.unique(np.geomspace(1, len(magnitude), bins + 1).astype(int))
    rows = np.maximum.reduceat(magnitude, edges[:-1])
    rows = np.interp(np.linspace(0, len(rows) - 1, bins), np.arange(len(rows)), rows)
    return np.clip(20.0 * np.log10(rows + 1e-10), SPECTRUM_FLOOR_DB, 0.0).astype(np.float32)


def level_db(mono: np.ndarray) -> float:
    """RMS level in dBFS, floored at ``LEVEL_FLOOR_DB``."""
    rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64)))) if len(mono) else 0.0
    return max(LEVEL_FLOOR_DB, 20.0 * np.log10(rms + 1e-12))


class EngineBridge(QObject):
    """Polls a :class:`LiveEngine` from the GUI thread and emits what changed.

    Signals:
        frame(image, number): a new frame, ``(H, W, 3)`` uint8 (the engine's array: do not write to it).
        traces(weight, loudness): with each new frame, the newest condition's attention weight and the
            loudness envelope that scaled the frame's g_s (both 0..1).
        audio(spectrum_db, level_db): the newest audio block's spectrum (``SPECTRUM_BINS``) and level.
        stats(snapshot): a :class:`~tpos_live.live.stats.StatsSnapshot`, ``stats_hz`` times a second.
        message(level, text): a report from the engine's threads.
        control_changed(state): the control state changed (by OSC, MIDI, modulation, a preset, or the
            panels themselves), so that the panels follow.
        preset_changed(index): the preset bank's current preset changed.

    Args:
        engine: a started (or soon started) engine.
        reports: the reporter the engine was built with, drained here.
        presets: the preset bank to follow (None: none).
        frame_hz, audio_hz, stats_hz: polling rates (frames, spectrum and meter, stats).
    """

    frame = Signal(object, int)
    traces = Signal(float, float)
    audio = Signal(object, float)
    stats = Signal(object)
    message = Signal(str, str)
    control_changed = Signal(object)
    preset_changed = Signal(int)

    def __init__(self, engine: LiveEngine, reports: ReportQueue | None = None, presets: PresetBank | None = None,
                 frame_hz: float = 60.0, audio_hz: float = 30.0, stats_hz: float = 4.0,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.reports = reports
        self.engine = engine
        self.presets = presets
        self._control_version = engine.control.state().version
        self._preset = presets.current if presets is not None else -1
        self.frames_seen = 0  # frames emitted (a frame the timer did not catch in time is not counted)
        self._frame_number = 0
        self._poll = QTimer(self, interval=max(1, round(1000 / frame_hz)))
        self._poll.timeout.connect(self.poll)
        self._audio = QTimer(self, interval=max(1, round(1000 / audio_hz)))
        self._audio.timeout.connect(self.poll_audio)
        self._stats = QTimer(self, interval=max(1, round(1000 / stats_hz)))
        self._stats.timeout.connect(self.poll_stats)
        self._timers = (self._poll, self._audio, self._stats)

    def start(self) -> None:
        for timer in self._timers:
            timer.start()

    def stop(self) -> None:
        for timer in self._timers:
            timer.stop()

    def poll(self) -> None:
        """Emit the newest frame (with the traces), if new, and the engine's reports (one timer tick)."""
        engine = self.engine
        number, frame = engine.frames.peek()
        if frame is not None and number != self._frame_number:
            self._frame_number = number
            self.frames_seen += 1
            self.frame.emit(frame.image, number)
            condition = engine.latest_condition()
            if condition is not None and frame.condition_index:  # not a black frame
                self.traces.emit(condition.weight, frame.loudness)
        if self.reports is not None:
            for level, text in self.reports.take():
                self.message.emit(level, text)
        self._poll_control()

    def _poll_control(self) -> None:
        state = self.engine.control.state()
        if state.version != self._control_version:
            self._control_version = state.version
            self.control_changed.emit(state)
        current = self.presets.current if self.presets is not None else -1
        if current != self._preset:
            self._preset = current
            self.preset_changed.emit(current)

    def poll_audio(self) -> None:
        """Emit the spectrum and level of the newest audio block."""
        mono, _ = self.engine.sound.mono_window(SPECTRUM_SAMPLES)
        self.audio.emit(log_spectrum(mono), level_db(mono))

    def poll_stats(self) -> None:
        self.stats.emit(self.engine.stats())


class EventLoopLag(QObject):
    """Measures how late the GUI thread serves a 10 ms timer: the longest time it was busy elsewhere
    (the output window's frames wait that long at most). ``worst_ms`` since :meth:`start`."""

    def __init__(self, interval_ms: int = 10, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.interval = interval_ms / 1000
        self.worst_ms = 0.0
        self._last = 0.0
        self._timer = QTimer(self, interval=interval_ms, timerType=Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._tick)

    def start(self) -> None:
        self._last = time.monotonic()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def _tick(self) -> None:
        now = time.monotonic()
        self.worst_ms = max(self.worst_ms, (now - self._last - self.interval) * 1000)
        self._last = now
