"""Live statistics: frame rate, per-stage times, audio-to-frame latency, drops and faults.

The stages record events into one thread-safe :class:`LiveStats`; anyone (the terminal printer, the
desktop app) takes a :class:`StatsSnapshot` whenever it likes. Rates and means cover the last
``window_seconds``; counters are totals since the start. Memory stays flat: each series keeps only the
entries of its last window (and never more than ``MAX_EVENTS``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_EVENTS = 4096
COUNTERS = (
    "frames",  # frames delivered
    "dropped_frames",  # frames the fps target called for that were not delivered in time
    "render_errors",  # renders that raised
    "bad_frames",  # renders that gave NaN or infinite values (not shown)
    "conditions",  # conditions the encoder published
    "dropped_conditions",  # conditions replaced before the renderer used them
    "encoder_errors",  # encodes that raised
    "scenes",  # scenes prepared (the first one included)
    "scene_errors",  # scene preparations that raised
    "scene_switches",  # scenes put on screen (the first one included)
    "morphs",  # switches crossfaded through blended scenes (the rest cut or fade pixels)
    "keyframes",  # keyframes made (B of one condition: a new condition, or again for a new scene or threshold)
    "keyframe_errors",  # keyframe batches that raised
    "unet_calls",  # UNet calls made for frames and keyframes (not for preparing scenes)
)


@dataclass(frozen=True)
class StatsSnapshot:
    """Where the engine stands. Times in milliseconds; None where nothing was measured in the window."""

    fps: float
    latency_ms: float | None  # mean audio-to-frame latency over the window (the age of the mix on screen,
    # the device's input latency included)
    latency_max_ms: float | None
    stage_ms: dict[str, float]  # mean time per stage ("encode", "render", "decode", "scene") over the window
    counters: dict[str, int] = field(default_factory=dict)
    overflows: int = 0  # audio input overflows reported by the device
    device_losses: int = 0
    source_state: str = "running"
    input_latency_ms: float | None = None  # the capture device's own input latency (None: not a device)
    keyframes_per_second: float = 0.0  # keyframes made over the window (0 on the per-frame path)

    @property
    def frames(self) -> int:
        return self.counters.get("frames", 0)

    @property
    def dropped_frames(self) -> int:
        return self.counters.get("dropped_frames", 0)

    def line(self) -> str:
        """One line for a terminal, e.g. ``23.9 fps | latency 180 ms (max 240) | render 31 ms | ...``."""
        latency = "-"
        if self.latency_ms is not None:
            latency = f"{self.latency_ms:.0f} ms (max {self.latency_max_ms:.0f})"
        if self.input_latency_ms is not None:
            latency += f" | input {self.input_latency_ms:.0f} ms"
        stages = " | ".join(f"{name} {ms:.0f} ms" for name, ms in self.stage_ms.items())
        rates = [f"{self.fps:5.1f} fps"]
        if self.counters.get("keyframes", 0):
            rates.append(f"{self.keyframes_per_second:.1f} keyframes/s")
        parts = rates + [f"latency {latency}"] + ([stages] if stages else []) + [
            f"dropped {self.counters.get('dropped_frames', 0)}", f"overflows {self.overflows}"]
        faults = sum(self.counters.get(name, 0) for name in ("render_errors", "bad_frames", "keyframe_errors"))
        if faults:
            parts.append(f"render faults {faults}")
        if self.source_state != "running":
            parts.append(f"audio {self.source_state.upper()}")
        return " | ".join(parts)


class LiveStats:
    """Thread-safe event sink for the live stages.

    Args:
        window_seconds: span of the rates and means in a snapshot.
        clock: the time source of the event times given (``time.monotonic``).
    """

    def __init__(self, window_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        self.window_seconds = window_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._frames: deque[float] = deque(maxlen=MAX_EVENTS)  # ready times
        self._keyframes: deque[tuple[float, float]] = deque(maxlen=MAX_EVENTS)  # (time, how many)
        self._latencies: deque[tuple[float, float]] = deque(maxlen=MAX_EVENTS)
        self._stages: dict[str, deque[tuple[float, float]]] = {}
        self._counters = dict.fromkeys(COUNTERS, 0)

    def frame(self, ready: float, latency: float | None = None) -> None:
        """A frame was delivered at ``ready`` (monotonic); ``latency``: the age in seconds of the audio it
        shows (see ``Frame.mix_audio_time``), None for frames without audio (black)."""
        with self._lock:
            self._frames.append(ready)
            _drop_before(self._frames, ready - self.window_seconds, lambda t: t)
            self._counters["frames"] += 1
            if latency is not None:
                self._latencies.append((ready, latency))
                _drop_before(self._latencies, ready - self.window_seconds, _time_of)

    def keyframes(self, count: int = 1) -> None:
        """``count`` keyframes were made now (one batched UNet call)."""
        with self._lock:
            now = self.clock()
            self._keyframes.append((now, count))
            _drop_before(self._keyframes, now - self.window_seconds, _time_of)
            self._counters["keyframes"] += count

    def stage(self, name: str, seconds: float) -> None:
        """A stage (encode, render, decode, scene) took ``seconds``."""
        with self._lock:
            now = self.clock()
            series = self._stages.setdefault(name, deque(maxlen=MAX_EVENTS))
            series.append((now, seconds))
            _drop_before(series, now - self.window_seconds, _time_of)

    def add(self, counter: str, count: int = 1) -> None:
        with self._lock:
            if counter not in self._counters:
                raise ValueError(f"unknown counter {counter!r}: one of {COUNTERS}")
            self._counters[counter] += count

    def snapshot(self, overflows: int = 0, device_losses: int = 0, source_state: str = "running",
                 input_latency: float | None = None) -> StatsSnapshot:
        """Rates and means over the last window, totals since the start (the source's passed in, with
        its input latency in seconds)."""
        now = self.clock()
        since = now - self.window_seconds
        with self._lock:
            span = min(self.window_seconds, max(now - self._started, 1e-3))
            fps = sum(1 for t in self._frames if t > since) / span
            keyframes = sum(count for t, count in self._keyframes if t > since) / span
            latencies = [value for t, value in self._latencies if t > since]
            stages = {}
            for name, series in self._stages.items():
                recent = [value for t, value in series if t > since]
                if recent:
                    stages[name] = 1000.0 * sum(recent) / len(recent)
            counters = dict(self._counters)
        return StatsSnapshot(
            fps=fps,
            latency_ms=1000.0 * sum(latencies) / len(latencies) if latencies else None,
            latency_max_ms=1000.0 * max(latencies) if latencies else None,
            stage_ms=stages, counters=counters, overflows=overflows, device_losses=device_losses,
            source_state=source_state,
            input_latency_ms=None if input_latency is None else 1000.0 * input_latency,
            keyframes_per_second=keyframes,
        )


def _time_of(entry: tuple[float, float]) -> float:
    return entry[0]


def _drop_before(series: deque, oldest: float, time_of: Callable) -> None:
    """Drop the entries older than ``oldest`` (no snapshot reads them again)."""
    while series and time_of(series[0]) < oldest:
        series.popleft()
