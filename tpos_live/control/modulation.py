"""Sound mapped to knobs: band levels (low/mid/high), onsets and loudness drive any knob, with a gain,
smoothing and a range.

    routes = [parse_route("low:audio:4:14"), parse_route("onset:threshold:0.9:0.6:2:0.05")]
    modulator = Modulator(engine.control, routes, sample_rate=engine.source.sample_rate)
    modulator.start(engine.source)          # 30 updates a second from the source's newest audio

Each feature is 0..1: band levels and loudness map -60..0 dBFS linearly; the onset strength is the
rise of the band levels since the last update (spectral flux), over its recent peak. ``beat`` and
``bar`` are tempo-synced: 1 on each beat (downbeat) of the beat clock, falling to 0 just before the next
(so they follow taps, the sound's tempo, MIDI clock or Ableton Link); 0 without a tempo. A route sets
``knob = low + (high - low) * clip(gain * feature, 0, 1)``, smoothed by a one-pole filter with the
route's time constant. (``text`` is not a target: each change of it prepares a new scene.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tpos_live.control.preset_bank import set_knob
from tpos_live.live.control import LiveControl
from tpos_live.live.knobs import KNOBS
from tpos_live.reporting import Reporter, ignore_report
from tpos_live.worker import Stage

TEMPO_FEATURES = ("beat", "bar")  # from the beat clock, not the sound
FEATURES = ("low", "mid", "high", "onset", "loudness", *TEMPO_FEATURES)
BAND_EDGES_HZ = (250.0, 4000.0)  # low < 250 Hz <= mid < 4 kHz <= high
FLOOR_DB = -60.0
MODULATED_KNOBS = tuple(knob for knob in KNOBS if knob != "text")


@dataclass(frozen=True)
class ModulationRoute:
    """One feature driving one knob.

    Attributes:
        feature: ``low``, ``mid``, ``high``, ``onset``, ``loudness``, or tempo-synced ``beat`` / ``bar``.
        knob: a knob name (not ``text``).
        low, high: the knob value at feature 0 and at feature 1 (high < low inverts).
        gain: multiplies the feature before it is clipped to 0..1.
        smoothing_seconds: the one-pole time constant (0: none).
    """

    feature: str
    knob: str
    low: float
    high: float
    gain: float = 1.0
    smoothing_seconds: float = 0.1

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise ValueError(f"feature must be one of {FEATURES}, got {self.feature!r}")
        if self.knob not in MODULATED_KNOBS:
            raise ValueError(f"knob must be one of {MODULATED_KNOBS}, got {self.knob!r}")
        bottom, top = KNOBS[self.knob].low, KNOBS[self.knob].high
        for end in (self.low, self.high):
            if not (math.isfinite(end) and bottom <= end <= top):
                raise ValueError(f"the range of '{self.knob}' must lie in {bottom}..{top}, got {end}")
        if not (math.isfinite(self.gain) and 0.0 <= self.gain <= 100.0):
            raise ValueError(f"gain must be in 0..100, got {self.gain}")
        if not 0.0 <= self.smoothing_seconds <= 10.0:
            raise ValueError(f"smoothing must be in 0..10 seconds, got {self.smoothing_seconds}")

    def target(self, features: dict[str, float]) -> float:
        """The knob value these features ask for (before smoothing)."""
        x = min(max(self.gain * features[self.feature], 0.0), 1.0)
        return self.low + (self.high - self.low) * x


def parse_route(text: str) -> ModulationRoute:
    """``FEATURE:KNOB:LOW:HIGH[:GAIN[:SMOOTHING]]`` (e.g. ``low:audio:4:14:1.5:0.1``); ValueError if bad."""
    parts = text.split(":")
    if not 4 <= len(parts) <= 6:
        raise ValueError(f"a modulation is FEATURE:KNOB:LOW:HIGH[:GAIN[:SMOOTHING]], got {text!r}")
    try:
        numbers = [float(part) for part in parts[2:]]
    except ValueError:
        raise ValueError(f"LOW, HIGH, GAIN and SMOOTHING must be numbers in {text!r}") from None
    return ModulationRoute(parts[0], parts[1], *numbers)


class AudioFeatures:
    """Band levels, onset strength and loudness of the newest audio window, each 0..1."""

    def __init__(self, sample_rate: int, window: int = 2048, onset_decay_seconds: float = 2.0) -> None:
        self.sample_rate, self.window = sample_rate, window
        freqs = np.fft.rfftfreq(window, 1.0 / sample_rate)
        low, high = BAND_EDGES_HZ
        self.bands = [freqs < low, (freqs >= low) & (freqs < high), freqs >= high]
        self.taper = np.hanning(window).astype(np.float32)
        self.onset_decay_seconds = onset_decay_seconds
        self._previous: np.ndarray | None = None
        self._onset_peak = 1e-3

    def __call__(self, mono: np.ndarray, dt: float) -> dict[str, float]:
        """Features of the last ``window`` samples of ``mono``; ``dt`` is the time since the last call."""
        x = np.zeros(self.window, np.float32)
        tail = np.asarray(mono, np.float32)[-self.window:]
        x[self.window - len(tail):] = tail
        power = np.abs(np.fft.rfft(x * self.taper)) ** 2 / (np.sum(self.taper) ** 2 / 4)
        levels = np.array([_level(power[band].sum()) for band in self.bands])
        flux = 0.0 if self._previous is None else float(np.maximum(levels - self._previous, 0.0).sum())
        self._previous = levels
        # the onset is the flux over its recent peak, which decays so a quiet passage regains range
        self._onset_peak = max(flux, self._onset_peak * math.exp(-dt / self.onset_decay_seconds), 1e-3)
        loudness = _level(float(np.mean(tail.astype(np.float64) ** 2)) * 2.0) if len(tail) else 0.0
        return {"low": levels[0], "mid": levels[1], "high": levels[2], "onset": flux / self._onset_peak,
                "loudness": loudness}


def tempo_features(clock, t: float) -> dict[str, float]:
    """``beat`` and ``bar`` at time ``t``: 1 on the beat (downbeat), falling to 0 (0 without a tempo)."""
    beat = None if clock is None else clock.beat_phase(t)
    bar = None if clock is None else clock.bar_phase(t)
    return {"beat": 0.0 if beat is None else 1.0 - beat, "bar": 0.0 if bar is None else 1.0 - bar}


def _level(power: float) -> float:
    """Power (1.0 = a full-scale sine) as 0..1 over -60..0 dB."""
    db = 10.0 * math.log10(max(power, 1e-12))
    return float(min(max((db - FLOOR_DB) / -FLOOR_DB, 0.0), 1.0))


class Modulator(Stage):
    """Applies :class:`ModulationRoute` s to a :class:`LiveControl` from audio features.

    :meth:`update` takes a window of mono audio (tests and callers with their own audio); :meth:`start`
    runs it ``rate`` times a second on a source's newest audio. ``clock`` (a
    :class:`~tpos_live.control.tempo.BeatClock`) gives the ``beat`` and ``bar`` features, at ``now()``.
    """

    name = "modulation"

    def __init__(self, control: LiveControl, routes: Sequence[ModulationRoute], sample_rate: int,
                 report: Reporter | None = None, clock=None, now: Callable[[], float] = time.monotonic) -> None:
        super().__init__(report or ignore_report)
        self.control, self.routes, self.clock, self.now = control, list(routes), clock, now
        self.features = AudioFeatures(sample_rate)
        self.values: dict[ModulationRoute, float] = {}
        self.latest: dict[str, float] = {}
        self._source = None
        self._interval = 1.0 / 30.0

    def update(self, mono: np.ndarray, dt: float) -> dict[str, float]:
        """Analyse ``mono`` and move every routed knob; returns the knob values set."""
        self.latest = {**self.features(mono, dt), **tempo_features(self.clock, self.now())}
        applied = {}
        for route in self.routes:
            wanted = route.target(self.latest)
            previous = self.values.get(route, wanted)
            keep = math.exp(-dt / route.smoothing_seconds) if route.smoothing_seconds > 0 else 0.0
            value = keep * previous + (1.0 - keep) * wanted
            self.values[route] = value
            applied[route.knob] = value
        for knob, value in applied.items():  # two routes on one knob: the later one wins
            set_knob(self.control, knob, value)
        return applied

    def start(self, source, rate: float = 30.0) -> Modulator:
        """Update from ``source.mono_window`` (a source, or the engine's
        :class:`~tpos_live.live.source_feed.SourceFeed`, which follows a swap) ``rate`` times a second on a
        thread until :meth:`stop`."""
        self._source, self._interval = source, 1.0 / rate
        return super().start()

    def _run(self) -> None:
        interval = self._interval
        while not self._stop.wait(interval):
            try:
                mono, _ = self._source.mono_window(self.features.window, self.features.sample_rate)
                self.update(mono, interval)
            except ValueError as error:  # a knob the engine refuses: say so, keep going
                self.report("warning", f"modulation: {error}")
