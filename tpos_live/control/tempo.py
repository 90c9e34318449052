"""Tempo: tap tempo, a real-time BPM estimate from the sound, a beat/bar clock, and beat-quantised actions.

    clock = BeatClock(beats_per_bar=4)
    tracker = OnsetTempo(sample_rate=44100, clock=clock)
    tracker.feed(block, end_time)             # each audio block, mono, with the capture time of its end
    quantiser = BeatQuantiser(clock, "bar").start()
    quantiser.schedule(lambda: bank.next())   # lands on the next downbeat
    MidiClockTempo(clock).handle(message)     # or: the beat clock from 24-ppqn MIDI clock

The estimate is an onset envelope (spectral flux of a log-magnitude STFT, 5 ms hop) over the last few
seconds, whose autocorrelation peak gives the beat period, refined to a fraction of a hop from the
peaks at its multiples; a comb over the envelope then gives the beat phase. Pure numpy, a few
hundred microseconds per update.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np

from tpos_live.audio.sources import AudioSource
from tpos_live.control.spec import BPM_RANGE
from tpos_live.live.source_feed import SourceFeed
from tpos_live.reporting import Reporter, ignore_report
from tpos_live.worker import Stage

QUANTISE_UNITS = ("off", "beat", "bar")


class BeatClock:
    """The beat grid: tempo, the time of a known beat and of a known downbeat. Thread-safe.

    Before it has a tempo, ``next_beat_time(t)`` is ``t`` (quantised actions happen at once).
    """

    def __init__(self, beats_per_bar: int = 4) -> None:
        if not 1 <= beats_per_bar <= 32:
            raise ValueError(f"beats per bar must be in 1..32, got {beats_per_bar}")
        self.beats_per_bar = beats_per_bar
        self._lock = threading.Lock()
        self._grid: tuple[float, float, float] | None = None  # (period seconds, a beat time, a downbeat time)

    @property
    def bpm(self) -> float | None:
        grid = self._grid
        return None if grid is None else 60.0 / grid[0]

    def set(self, bpm: float, beat_time: float, downbeat_time: float | None = None) -> None:
        """A new tempo and a beat at ``beat_time``; the bar count carries over from the old grid unless
        ``downbeat_time`` says where a bar starts."""
        if not (math.isfinite(bpm) and 20.0 <= bpm <= 400.0):
            raise ValueError(f"bpm must be in 20..400, got {bpm}")
        period = 60.0 / bpm
        with self._lock:
            if downbeat_time is None:
                downbeat_time = beat_time
                if self._grid is not None:  # keep counting bars where the old grid had them
                    old_period, _, old_downbeat = self._grid
                    beats_in = round((beat_time - old_downbeat) / old_period) % self.beats_per_bar
                    downbeat_time = beat_time - beats_in * period
            self._grid = (period, beat_time, downbeat_time)

    def beat_phase(self, t: float) -> float | None:
        """Where ``t`` is within its beat, 0..1 (None without a tempo)."""
        grid = self._grid
        return None if grid is None else ((t - grid[1]) / grid[0]) % 1.0

    def bar_phase(self, t: float) -> float | None:
        """Where ``t`` is within its bar, 0..1 (None without a tempo)."""
        grid = self._grid
        return None if grid is None else ((t - grid[2]) / (grid[0] * self.beats_per_bar)) % 1.0

    def next_beat_time(self, t: float, unit: str = "beat") -> float:
        """The first beat (``unit="bar"``: downbeat) at or after ``t``; ``t`` itself without a tempo."""
        grid = self._grid
        if grid is None or unit == "off":
            return t
        period, beat, downbeat = grid
        step, anchor = (period * self.beats_per_bar, downbeat) if unit == "bar" else (period, beat)
        return anchor + math.ceil((t - anchor) / step - 1e-9) * step


class TapTempo:
    """Tempo from taps: the median interval of the last taps; a pause longer than ``max_gap`` seconds
    starts a new series, whose first tap is a downbeat."""

    def __init__(self, clock: BeatClock | None = None, max_gap: float = 2.0, keep: int = 8,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.clock, self.max_gap, self.keep, self.now = clock, max_gap, keep, now
        self.taps: list[float] = []
        self.bpm: float | None = None

    def tap(self, when: float | None = None) -> float | None:
        """Register a tap (at ``when``, default now); returns the tempo once there are two taps."""
        when = self.now() if when is None else when
        if self.taps and not 0.0 < when - self.taps[-1] <= self.max_gap:
            self.taps = []
        self.taps = (self.taps + [when])[-self.keep:]
        if len(self.taps) < 2:
            return None
        self.bpm = 60.0 / float(np.median(np.diff(self.taps)))
        if self.clock is not None and 20.0 <= self.bpm <= 400.0:
            beats = len(self.taps) - 1  # taps so far in this series; the series started on a downbeat
            period = 60.0 / self.bpm
            self.clock.set(self.bpm, when, downbeat_time=when - (beats % self.clock.beats_per_bar) * period)
        return self.bpm


class OnsetTempo:
    """Real-time BPM and beat phase from audio blocks (see the module docstring).

    Args:
        sample_rate: of the blocks fed.
        clock: updated with each estimate (optional).
        min_bpm, max_bpm: the tempo range searched (the fastest tempo whose beats are there wins, so a
            174 BPM track is not read as 87).
        window_seconds: how much of the past the estimate looks at (longer: steadier, slower to follow).
        hop_seconds: onset envelope resolution.
        update_seconds: how often the estimate is renewed.
    """

    def __init__(self, sample_rate: int, clock: BeatClock | None = None, min_bpm: float = BPM_RANGE[0],
                 max_bpm: float = BPM_RANGE[1], window_seconds: float = 6.0, hop_seconds: float = 0.005,
                 update_seconds: float = 0.25) -> None:
        if not (20.0 <= min_bpm < max_bpm <= 400.0):
            raise ValueError(f"need 20 <= min_bpm < max_bpm <= 400, got {min_bpm}..{max_bpm}")
        if window_seconds < 3 * 60.0 / min_bpm:
            raise ValueError(f"the window must hold three beats at {min_bpm} BPM: at least "
                             f"{3 * 60.0 / min_bpm:.1f} s, got {window_seconds}")
        self.sample_rate, self.clock = sample_rate, clock
        self.hop = max(1, round(hop_seconds * sample_rate))
        self.rate = sample_rate / self.hop  # envelope frames per second
        self.n_fft = 1 << max(5, math.ceil(math.log2(3 * self.hop)))
        self.window = np.hanning(self.n_fft).astype(np.float32)
        # two frames of margin each side, so a tempo at the edge of the range still has a peak to fit
        self.lags = (max(2, math.floor(60.0 * self.rate / max_bpm) - 2), math.ceil(60.0 * self.rate / min_bpm) + 2)
        self.envelope = np.zeros(round(window_seconds * self.rate), np.float32)
        self.frames_seen = 0
        self.update_frames = max(1, round(update_seconds * self.rate))
        self.bpm: float | None = None
        self.beat_time: float | None = None  # the newest beat found
        self._tail = np.zeros(self.n_fft - self.hop, np.float32)
        self._pending = np.zeros(0, np.float32)
        self._previous: np.ndarray | None = None
        self._envelope_end_time = 0.0  # the time of the newest envelope frame
        self._since_update = 0

    def feed(self, block: np.ndarray, end_time: float) -> float | None:
        """Add mono samples whose last one was captured at ``end_time`` (seconds, any clock); returns
        the current BPM estimate (None until a few beats were heard)."""
        samples = np.concatenate([self._pending, np.asarray(block, np.float32).reshape(-1)])
        whole = len(samples) // self.hop * self.hop
        self._pending = samples[whole:]
        if whole:
            self._add_frames(samples[:whole], end_time - len(self._pending) / self.sample_rate)
        return self.bpm

    def _add_frames(self, samples: np.ndarray, end_time: float) -> None:
        audio = np.concatenate([self._tail, samples])
        self._tail = audio[len(audio) - len(self._tail):]
        count = len(samples) // self.hop
        starts = np.arange(count) * self.hop
        frames = audio[starts[:, None] + np.arange(self.n_fft)] * self.window
        magnitude = np.log1p(1000.0 * np.abs(np.fft.rfft(frames, axis=1)))
        previous = magnitude[:1] if self._previous is None else self._previous[None]
        flux = np.maximum(np.diff(np.concatenate([previous, magnitude]), axis=0), 0.0).sum(axis=1)
        self._previous = magnitude[-1]
        count = min(count, len(self.envelope))
        self.envelope = np.roll(self.envelope, -count)
        self.envelope[-count:] = flux[-count:]
        # a frame's time is its window's centre: the newest one ends at end_time
        self._envelope_end_time = end_time - (self.n_fft / 2) / self.sample_rate
        self.frames_seen += count
        self._since_update += count
        if self._since_update >= self.update_frames and self.frames_seen >= 3 * self.lags[1]:
            self._since_update = 0
            self._estimate()

    def _estimate(self) -> None:
        heard = min(self.frames_seen, len(self.envelope))
        onsets = self.envelope[-heard:].astype(np.float64)
        onsets = np.maximum(onsets - _moving_average(onsets, round(0.1 * self.rate)), 0.0)
        if not onsets.any():
            return
        period = _beat_period(onsets, *self.lags)
        if period is None:
            return
        offset = _beat_offset(onsets, period)
        self.bpm = 60.0 * self.rate / period
        self.beat_time = self._envelope_end_time - offset / self.rate
        if self.clock is not None:
            self.clock.set(self.bpm, self.beat_time)


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    width = max(1, width)
    return np.convolve(x, np.ones(width) / width, mode="same")


def _autocorrelation(x: np.ndarray) -> np.ndarray:
    n = len(x)
    spectrum = np.fft.rfft(x - x.mean(), 2 * n)
    return np.fft.irfft(np.abs(spectrum) ** 2)[:n]


def _peak(values: np.ndarray, centre: float, radius: int) -> float | None:
    """The sub-sample position of the largest value within ``radius`` of ``centre`` (parabolic fit)."""
    low, high = max(1, round(centre) - radius), min(len(values) - 2, round(centre) + radius)
    if low > high:
        return None
    i = low + int(np.argmax(values[low:high + 1]))
    left, mid, right = values[i - 1], values[i], values[i + 1]
    curve = left - 2 * mid + right
    return i + (0.5 * (left - right) / curve if curve < 0 else 0.0)


def _beat_period(onsets: np.ndarray, shortest: int, longest: int) -> float | None:
    """The beat period in envelope frames: the strongest autocorrelation lag in range, refined by a
    least-squares fit through the peaks at its multiples (each halves the rounding error)."""
    acf = _autocorrelation(onsets)
    longest = min(longest, len(acf) // 3)
    if longest <= shortest:
        return None
    # choose on the autocorrelation summed over 3 lags: a period between two lags splits its peak
    spread = np.convolve(acf, np.ones(3), mode="same")
    lag = _peak(acf, shortest + int(np.argmax(spread[shortest:longest + 1])), 1)
    multiples, positions = [1.0], [lag]
    for k in range(2, 9):
        if (k + 0.5) * lag >= len(acf) * 0.6:
            break
        found = _peak(acf, k * _fit_period(multiples, positions), 2)
        if found is not None:
            multiples.append(float(k))
            positions.append(found)
    return _fit_period(multiples, positions)


def _fit_period(multiples: list[float], positions: list[float]) -> float:
    """The least-squares period through peaks at ``positions`` = ``multiples`` x period."""
    m, p = np.asarray(multiples), np.asarray(positions)
    return float(m @ p / (m @ m))


def _beat_offset(onsets: np.ndarray, period: float) -> float:
    """How many frames before the newest one the latest beat is: the comb phase that collects the most
    onset energy."""
    n = len(onsets)
    beats = np.arange(int((n - 1) // period)) * period
    candidates = np.arange(math.ceil(period))
    scores = [onsets[np.round(n - 1 - offset - beats).astype(int)].sum() for offset in candidates]
    best = int(np.argmax(scores))
    neighbours = [scores[(best - 1) % len(scores)], scores[best], scores[(best + 1) % len(scores)]]
    curve = neighbours[0] - 2 * neighbours[1] + neighbours[2]
    return best + (0.5 * (neighbours[0] - neighbours[2]) / curve if curve < 0 else 0.0)


class SourceTempo(Stage):
    """Feeds the newest audio of ``sound`` (mixed to mono) to an :class:`OnsetTempo` every ``interval``
    seconds on its own thread, timed by the source's capture clock (``time.monotonic``). A swapped source
    is followed from the next read (with a new tracker when it runs at another rate)."""

    name = "tempo"

    def __init__(self, sound: SourceFeed, clock: BeatClock, min_bpm: float = BPM_RANGE[0],
                 max_bpm: float = BPM_RANGE[1], interval: float = 0.02, report: Reporter = ignore_report) -> None:
        super().__init__(report)
        self.sound, self.clock, self.interval = sound, clock, interval
        self.bpm_range = (min_bpm, max_bpm)
        self.tracker: OnsetTempo | None = None
        self._follow(sound.current)

    def _follow(self, source: AudioSource) -> None:
        rate = source.ring.sample_rate
        if self.tracker is None or self.tracker.sample_rate != rate:
            self.tracker = OnsetTempo(rate, self.clock, *self.bpm_range)
        self.source, self._reader = source, source.ring.reader()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.sound.current is not self.source:
                self._follow(self.sound.current)
            frames = self._reader.read()
            end_time = self.source.capture_time(self._reader.position - 1)
            if len(frames) and end_time is not None:
                self.tracker.feed(np.asarray(frames, np.float32).mean(axis=1), end_time)


class BeatQuantiser(Stage):
    """Runs scheduled actions on the next beat or bar of a :class:`BeatClock`.

    :meth:`poll` runs the actions that are due; :meth:`start` polls on a thread every ``resolution``
    seconds (a millisecond: well inside one frame). Actions run one at a time; one that raises is
    reported and dropped.
    """

    name = "beat-quantiser"

    def __init__(self, clock: BeatClock, unit: str = "beat", now: Callable[[], float] = time.monotonic,
                 report: Reporter | None = None, resolution: float = 0.001) -> None:
        super().__init__(report or ignore_report)
        if unit not in QUANTISE_UNITS:
            raise ValueError(f"quantise unit must be one of {QUANTISE_UNITS}, got {unit!r}")
        self.clock, self.unit, self.now, self.resolution = clock, unit, now, resolution
        self._due: list[tuple[float, Callable[[], None]]] = []
        self._lock = threading.Lock()

    def schedule(self, action: Callable[[], None], when: float | None = None) -> float:
        """Run ``action`` on the first beat (or bar) at or after ``when`` (default now); returns that time."""
        due = self.clock.next_beat_time(self.now() if when is None else when, self.unit)
        with self._lock:
            self._due.append((due, action))
            self._due.sort(key=lambda item: item[0])
        return due

    def poll(self, now: float | None = None) -> int:
        """Run every action due at ``now`` (default: the clock's now); returns how many ran."""
        now = self.now() if now is None else now
        with self._lock:
            ready = [item for item in self._due if item[0] <= now]
            self._due = self._due[len(ready):]
        for _, action in ready:
            try:
                action()
            except (ValueError, IndexError, KeyError) as error:
                self.report("warning", f"a quantised control change failed: {error}")
        return len(ready)

    @property
    def pending(self) -> int:
        return len(self._due)

    def _run(self) -> None:
        while not self._stop.wait(self.resolution):
            self.poll()


class MidiClockTempo:
    """The beat clock from MIDI clock: 24 ``clock`` messages a beat, with ``start``, ``continue``,
    ``stop`` and ``songpos`` (song position, in sixteenths).

    Feed it every message with :meth:`handle` (the MIDI controller passes clock messages on). The tempo
    is a least-squares fit of the last ``window`` ticks' arrival times (MIDI clock jitters by a
    millisecond or so per tick); the bar count starts at ``start`` (its first tick is a downbeat) or
    at the song position. Before the first ``start`` the ticks still give the tempo, counted from the
    first tick heard.

    Args:
        clock: the beat clock to drive.
        window: ticks in the tempo fit (48: two beats).
        now: the monotonic clock of the BeatClock's times.
    """

    PPQN = 24

    def __init__(self, clock: BeatClock, window: int = 48, now: Callable[[], float] = time.monotonic) -> None:
        if window < 3:
            raise ValueError(f"the tempo fit needs at least 3 ticks, got {window}")
        self.clock, self.window, self.now = clock, window, now
        self.playing = False
        self.ticks = 0  # ticks since start (or the song position), the next tick's number
        self.bpm: float | None = None
        self._times: list[float] = []
        self._lock = threading.Lock()

    def handle(self, message, when: float | None = None) -> bool:
        """Apply one mido message (arrived at ``when``, default now); True if it was a clock message."""
        kind = getattr(message, "type", None)
        when = self.now() if when is None else when
        with self._lock:
            if kind == "clock":
                self._tick(when)
            elif kind == "start":
                self.playing, self.ticks, self._times = True, 0, []
            elif kind == "continue":
                self.playing = True
            elif kind == "stop":
                self.playing = False
            elif kind == "songpos":
                self.ticks, self._times = 6 * int(message.pos), []  # a sixteenth is 6 ticks
            else:
                return False
        return True

    def _tick(self, when: float) -> None:
        number = self.ticks
        self.ticks += 1
        self._times = (self._times + [when])[-self.window:]
        if len(self._times) < 3:
            return
        times = np.asarray(self._times)
        steps = np.arange(len(times), dtype=np.float64)
        fit = np.polyfit(steps, times, 1)
        seconds_per_tick = float(fit[0])
        if not seconds_per_tick > 0:
            return
        bpm = 60.0 / (self.PPQN * seconds_per_tick)
        if not 20.0 <= bpm <= 400.0:
            return
        self.bpm = bpm
        # the fitted time of this tick (less jitter than its arrival), and where its beat and bar began
        fitted = float(np.polyval(fit, steps[-1]))
        into_beat = number % self.PPQN
        into_bar = number % (self.PPQN * self.clock.beats_per_bar)
        self.clock.set(bpm, fitted - into_beat * seconds_per_tick, fitted - into_bar * seconds_per_tick)
