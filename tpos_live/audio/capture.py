"""Live audio sources: a capture device, a file played in real time, or a synthetic signal.

Every source fills a :class:`~tpos_live.audio.ringbuffer.RingBuffer` in real time and nothing else;
consumers (the encoder, the renderer's loudness follower, a recorder) read from the ring at their
own pace. The capture callback only copies into the ring and counts overflows: no Python work that
could miss the audio deadline.

A device that disappears or errors is noticed (the stream ends on its own, or no audio arrives for
``stall_seconds``), reported, and reopened with exponential backoff until it is back.

    source = DeviceSource(CaptureConfig(device="USB Audio", gain_db=6.0), preferred_rate=44100)
    source.start()
    window, end = source.mono_window(44100, rate=44100)   # the last second, mixed down, gain applied
    source.stop()
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from tpos_live.audio.decode import decode_audio
from tpos_live.audio.ringbuffer import RingBuffer
from tpos_live.errors import UserError

Reporter = Callable[[str, str], None]
"""``report(level, message)`` with level "info", "warning" or "error": how sources and the engine speak."""

STATES = ("stopped", "starting", "running", "lost", "finished")


def ignore_report(level: str, message: str) -> None:
    """A :data:`Reporter` that says nothing."""


# ---- PortAudio devices ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device as ``tpos-live devices`` lists it."""

    index: int
    name: str
    host_api: str
    input_channels: int
    output_channels: int
    default_sample_rate: float
    is_default_input: bool
    is_default_output: bool


def sounddevice():
    """The sounddevice module; a UserError that says what to install when PortAudio is missing."""
    try:
        import sounddevice as sd
    except OSError as error:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise UserError("the PortAudio library is missing: install it (Debian/Ubuntu: apt-get install "
                        "libportaudio2) to capture or play audio") from error
    except ImportError as error:
        raise UserError("the sounddevice package is missing: pip install sounddevice") from error
    return sd


def refresh_devices() -> None:
    """Re-scan PortAudio's devices (it lists them once, at start-up), e.g. after a device came back.

    PortAudio can only re-scan by terminating: every open PortAudio stream of this process is closed.
    """
    sd = sounddevice()
    sd._terminate()
    sd._initialize()


def list_devices() -> list[DeviceInfo]:
    """Every PortAudio device, inputs and outputs, in PortAudio's order."""
    sd = sounddevice()
    host_apis = sd.query_hostapis()
    try:
        default_in = sd.query_devices(kind="input")["index"]
    except sd.PortAudioError:
        default_in = -1
    try:
        default_out = sd.query_devices(kind="output")["index"]
    except sd.PortAudioError:
        default_out = -1
    return [
        DeviceInfo(index=d["index"], name=d["name"], host_api=host_apis[d["hostapi"]]["name"],
                   input_channels=d["max_input_channels"], output_channels=d["max_output_channels"],
                   default_sample_rate=d["default_samplerate"], is_default_input=d["index"] == default_in,
                   is_default_output=d["index"] == default_out)
        for d in sd.query_devices()
    ]


def find_device(spec: int | str | None, host_api: str | None = None, kind: str = "input") -> DeviceInfo:
    """The device named by ``spec``: an index, a name (exact, else a unique case-insensitive
    substring), or None for the default ``kind`` ("input" or "output") device; ``host_api`` (a name
    substring, e.g. "ALSA") narrows the search. Raises UserError saying what to pick instead."""
    channels = (lambda d: d.input_channels) if kind == "input" else (lambda d: d.output_channels)
    devices = [d for d in list_devices() if channels(d) > 0]
    if host_api is not None:
        devices = [d for d in devices if host_api.lower() in d.host_api.lower()]
    hint = "run 'tpos-live devices' to see them"
    if not devices:
        where = f" on host API '{host_api}'" if host_api else ""
        raise UserError(f"no audio {kind} devices found{where}: connect one, or use --file or --synthetic")
    if spec is None:
        defaults = [d for d in devices if (d.is_default_input if kind == "input" else d.is_default_output)]
        return defaults[0] if defaults else devices[0]
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        matches = [d for d in devices if d.index == int(spec)]
        if not matches:
            raise UserError(f"there is no audio {kind} device with index {spec}: {hint}")
        return matches[0]
    exact = [d for d in devices if d.name == spec]
    matches = exact or [d for d in devices if spec.lower() in d.name.lower()]
    if not matches:
        raise UserError(f"no audio {kind} device matches '{spec}': {hint}")
    if len(matches) > 1:
        names = ", ".join(f"{d.index}: {d.name} ({d.host_api})" for d in matches)
        raise UserError(f"'{spec}' matches several {kind} devices ({names}): give its index or --host-api")
    return matches[0]


# ---- channels, gain and rates ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelMap:
    """How the captured channels become the program signal: one picked channel, or a mix-down; then gain.

    The program (what is recorded) keeps stereo when two channels are captured and none is picked;
    the encoder and the loudness follower always take the mono mix.
    """

    channels: int  # channels the stream delivers
    pick: int | None = None  # use only this channel (0-based); None mixes down
    gain: float = 1.0  # linear

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError(f"channels must be at least 1, got {self.channels}")
        if self.pick is not None and not 0 <= self.pick < self.channels:
            raise ValueError(f"channel {self.pick} does not exist in {self.channels} channels")
        if not self.gain > 0:
            raise ValueError(f"gain must be positive, got {self.gain}")

    @property
    def program_channels(self) -> int:
        return 2 if self.pick is None and self.channels == 2 else 1

    def program(self, frames: np.ndarray) -> np.ndarray:
        """``(n, channels)`` captured frames -> ``(n, program_channels)`` float32 with gain."""
        if self.pick is not None:
            out = frames[:, self.pick : self.pick + 1]
        elif self.channels <= 2:
            out = frames
        else:
            out = frames.mean(axis=1, keepdims=True, dtype=np.float32)
        return (out * np.float32(self.gain)).astype(np.float32, copy=False)

    def mono(self, frames: np.ndarray) -> np.ndarray:
        """``(n, channels)`` captured frames -> ``(n,)`` float32 with gain."""
        selected = frames[:, self.pick] if self.pick is not None else frames.mean(axis=1, dtype=np.float32)
        return (selected * np.float32(self.gain)).astype(np.float32, copy=False)


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def resample(mono: np.ndarray, from_rate: int, to_rate: int, length: int) -> np.ndarray:
    """Band-limited resampling of a window by FFT, to exactly ``length`` samples at ``to_rate``.

    The spectrum is cut (or zero-padded) at the lower Nyquist frequency, so downsampling does not
    alias. The window is treated as periodic: its edges ring slightly, which the encoder's
    spectrogram does not mind.
    """
    if from_rate == to_rate and len(mono) == length:
        return mono.astype(np.float32, copy=False)
    needed = round(len(mono) * to_rate / from_rate)
    out = np.fft.irfft(np.fft.rfft(mono.astype(np.float64)), n=needed) * (needed / len(mono))
    if needed < length:  # keep the newest samples at the end, as the window's end is "now"
        out = np.pad(out, (length - needed, 0))
    return out[-length:].astype(np.float32)


# ---- the source protocol and what every source shares ----------------------------------------------


@runtime_checkable
class AudioSource(Protocol):
    """What the live engine needs from a source of sound.

    Attributes:
        description: for messages, e.g. "pulse (ALSA), 44100 Hz, 2 ch".
        sample_rate: of the samples in ``ring``.
        ring: the captured frames, ``ring.channels`` of them per sample.
        channel_map: from captured frames to the program and mono signals.
        state: one of "stopped", "starting", "running", "lost" (device gone, reopening), "finished"
            (a file played to its end).
        overflows: input overflows reported by the device (samples PortAudio had to drop).
        losses: times the device was lost.
    """

    description: str
    sample_rate: int
    ring: RingBuffer
    channel_map: ChannelMap
    state: str
    overflows: int
    losses: int

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def capture_time(self, index: int) -> float | None:
        """Monotonic time at which sample ``index`` was captured (None before any audio)."""
        ...

    def mono_window(self, count: int, rate: int | None = None) -> tuple[np.ndarray, int]:
        """The newest ``count`` samples as mono at ``rate`` (default: the source's) and the ring's end."""
        ...


class _RingSource:
    """The state every source shares: its ring, channel map, state, counters and reporter."""

    def __init__(self, description: str, sample_rate: int, channel_map: ChannelMap, buffer_seconds: float,
                 report: Reporter | None) -> None:
        if not buffer_seconds >= 1.0:
            raise ValueError(f"buffer_seconds must be at least 1, got {buffer_seconds}")
        self.description = description
        self.sample_rate = sample_rate
        self.channel_map = channel_map
        self.ring = RingBuffer(round(buffer_seconds * sample_rate), channel_map.channels, sample_rate)
        self.state = "stopped"
        self.overflows = 0
        self.losses = 0
        self.input_latency = 0.0  # seconds between the sound reaching the device and its callback
        self.report = report or ignore_report

    def capture_time(self, index: int) -> float | None:
        arrived = self.ring.capture_time(index)
        return None if arrived is None else arrived - self.input_latency

    def mono_window(self, count: int, rate: int | None = None) -> tuple[np.ndarray, int]:
        rate = rate or self.sample_rate
        needed = count if rate == self.sample_rate else int(np.ceil(count * self.sample_rate / rate)) + 1
        frames, end = self.ring.latest(needed)
        mono = self.channel_map.mono(frames)
        return resample(mono, self.sample_rate, rate, count), end


class _Pacer:
    """Feeds a ring from a function at wall-clock pace, in fixed blocks, like an audio callback would."""

    def __init__(self, fill: Callable[[int], np.ndarray | None], ring: RingBuffer,
                 block_seconds: float = 0.01, on_end: Callable[[], None] | None = None) -> None:
        self.fill, self.ring, self.on_end = fill, ring, on_end
        self.block = max(1, round(block_seconds * ring.sample_rate))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tpos-audio-pacer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        started, produced = time.monotonic(), 0
        interval = self.block / self.ring.sample_rate
        while not self._stop.wait(interval / 2):
            due = round((time.monotonic() - started) * self.ring.sample_rate)
            while produced + self.block <= due:
                frames = self.fill(self.block)
                if frames is None:  # the signal has ended
                    if self.on_end is not None:
                        self.on_end()
                    return
                self.ring.write(frames)
                produced += self.block


@dataclass(frozen=True)
class _StreamTiming:
    stall_seconds: float  # no audio for this long: lost
    first_audio_seconds: float  # no audio this long after opening: lost (devices take a while to start)
    first_retry_seconds: float
    longest_retry_seconds: float


class _StreamSupervisor:
    """Keeps a PortAudio stream alive: notices when it dies or stalls, reports, reopens with backoff.

    ``open_stream(on_finished)`` opens and starts a stream whose callback writes to the source's ring
    and which calls ``on_finished`` when it ends; it raises on failure. A reopened stream counts as
    back only once audio arrives through it (a device can open well before it delivers).
    """

    def __init__(self, source: _RingSource, open_stream: Callable[[Callable[[], None]], object], name: str,
                 timing: _StreamTiming, before_reopen: Callable[[], None]) -> None:
        self.source, self.open_stream, self.name = source, open_stream, name
        self.timing = timing
        self.before_reopen = before_reopen
        self.stream = None
        self._ended = threading.Event()
        self._stop = threading.Event()
        self._opened_at = 0.0
        self._lost_at = 0.0
        self._thread = threading.Thread(target=self._run, name="tpos-audio-supervisor", daemon=True)

    def start(self) -> None:
        self._open()
        self.source.state = "running"
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
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
                    self.source.report("info", f"audio device '{self.name}' is back after "
                                               f"{time.monotonic() - self._lost_at:.1f} s (reopened)")
                continue
            if self.source.state != "lost":
                self.source.state = "lost"
                self.source.losses += 1
                self._lost_at = time.monotonic()
                self.source.report("warning", f"audio device '{self.name}' {problem}: keeping the last "
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
                    self.source.report("info", f"audio device '{self.name}' is not back yet "
                                               f"({_first_line(error)}); retrying with backoff")
                delay = min(delay * 2, self.timing.longest_retry_seconds)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# ---- capture devices ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureConfig:
    """Which device to capture from and how.

    Attributes:
        device: index, name or unique name substring; None for the default input.
        host_api: narrow the device search to a host API (name substring: "ALSA", "JACK", "WASAPI").
        sample_rate: None takes the rate the consumer prefers when the device supports it, else the
            device's default rate.
        channels: channels to open; None opens two (or one on a mono device), or up to ``channel``.
        channel: use only this input channel (0-based); None mixes the channels down.
        gain_db: input gain applied to what is read (the ring keeps the raw samples).
        latency: PortAudio's suggested latency: "low", "high" or seconds.
        blocksize: frames per callback; 0 lets the host choose.
        buffer_seconds: how much audio the ring keeps.
        stall_seconds: no audio for this long means the device is lost.
        first_audio_seconds: how long a freshly opened device may take to deliver its first audio.
        retry_seconds: first and longest wait between reopen attempts (doubling in between).
    """

    device: int | str | None = None
    host_api: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    channel: int | None = None
    gain_db: float = 0.0
    latency: str | float = "high"
    blocksize: int = 0
    buffer_seconds: float = 30.0
    stall_seconds: float = 2.0
    first_audio_seconds: float = 5.0
    retry_seconds: tuple[float, float] = (0.25, 4.0)

    def __post_init__(self) -> None:
        if self.sample_rate is not None and not 8000 <= self.sample_rate <= 384000:
            raise ValueError(f"sample rate must be in 8000..384000 Hz, got {self.sample_rate}")
        if self.channels is not None and not 1 <= self.channels <= 64:
            raise ValueError(f"channels must be in 1..64, got {self.channels}")
        if self.channel is not None and self.channel < 0:
            raise ValueError(f"channel must be 0 or more (0 is the first), got {self.channel}")
        if self.channel is not None and self.channels is not None and self.channel >= self.channels:
            raise ValueError(f"channel {self.channel} is not among the {self.channels} channels opened")
        if not -60.0 <= self.gain_db <= 60.0:
            raise ValueError(f"gain must be in -60..60 dB, got {self.gain_db}")
        if isinstance(self.latency, str) and self.latency not in ("low", "high"):
            raise ValueError(f"latency must be 'low', 'high' or seconds, got {self.latency!r}")
        if self.blocksize < 0 or not 1.0 <= self.buffer_seconds <= 600.0:
            raise ValueError("blocksize must be >= 0 and buffer_seconds in 1..600")
        if not (self.stall_seconds > 0 and self.first_audio_seconds > 0):
            raise ValueError("stall_seconds and first_audio_seconds must be positive")
        if not 0 < self.retry_seconds[0] <= self.retry_seconds[1]:
            raise ValueError(f"retry_seconds must be (first, longest) with 0 < first <= longest, got "
                             f"{self.retry_seconds}")

    @property
    def timing(self) -> _StreamTiming:
        return _StreamTiming(self.stall_seconds, self.first_audio_seconds, *self.retry_seconds)


class DeviceSource(_RingSource):
    """Captures from a PortAudio input device into the ring.

    The device, its rate and its channels are settled here (raising UserError when the device cannot
    do what is asked); :meth:`start` opens the stream. A lost device is reopened by name: each attempt
    re-scans PortAudio's devices, which closes any other PortAudio stream of this process.

    Args:
        config: the device and how to capture from it.
        preferred_rate: the rate the consumer works at (the audio encoder's), used when the device
            supports it, so that no resampling is needed.
        report: receives warnings when the device is lost and news when it is back.
    """

    def __init__(self, config: CaptureConfig, preferred_rate: int | None = None,
                 report: Reporter | None = None) -> None:
        device = find_device(config.device, config.host_api, "input")
        channels = _capture_channels(config, device)
        rate = _capture_rate(config, device, channels, preferred_rate)
        pick = config.channel if channels > 1 else None
        channel_map = ChannelMap(channels, pick, db_to_gain(config.gain_db))
        description = f"{device.name} ({device.host_api}), {rate} Hz, {channels} ch"
        super().__init__(description, rate, channel_map, config.buffer_seconds, report)
        self.config = config
        self.device = device
        self._supervisor = _StreamSupervisor(self, self._open_stream, device.name, config.timing,
                                             before_reopen=self._find_again)

    def start(self) -> None:
        self.state = "starting"
        try:
            self._supervisor.start()
        except Exception as error:
            self.state = "stopped"
            raise UserError(f"cannot open audio device '{self.device.name}' ({_first_line(error)}): check it "
                            f"is connected and free, or pick another with --device") from error

    def stop(self) -> None:
        self._supervisor.stop()
        self.state = "stopped"

    def _callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:
        # Runs on PortAudio's thread against a deadline: count, copy, nothing else.
        if status.input_overflow:
            self.overflows += 1
        self.ring.write(indata)

    def _open_stream(self, on_finished: Callable[[], None]):
        sd = sounddevice()
        stream = sd.InputStream(device=self.device.index, samplerate=self.sample_rate,
                                channels=self.channel_map.channels, dtype="float32",
                                latency=self.config.latency, blocksize=self.config.blocksize,
                                callback=self._callback, finished_callback=on_finished)
        stream.start()
        return stream

    def _find_again(self) -> None:
        """Before a reopen: re-scan, and find the device by its name (its index may have changed)."""
        refresh_devices()
        self.device = find_device(self.device.name, self.device.host_api, "input")


def _capture_channels(config: CaptureConfig, device: DeviceInfo) -> int:
    available = device.input_channels
    # Two channels by default (a mono device gives one), or enough to reach the channel picked.
    wanted = config.channels or max(min(2, available), (config.channel or 0) + 1)
    if wanted > available:
        raise UserError(f"device '{device.name}' has {available} input channel(s), {wanted} were asked for: "
                        f"pick a channel below {available}")
    return wanted


def _capture_rate(config: CaptureConfig, device: DeviceInfo, channels: int, preferred: int | None) -> int:
    sd = sounddevice()
    default = round(device.default_sample_rate)
    candidates = [config.sample_rate] if config.sample_rate else [preferred, default]
    for rate in [r for r in candidates if r]:
        try:
            sd.check_input_settings(device=device.index, channels=channels, dtype="float32", samplerate=rate)
            return rate
        except Exception:  # noqa: BLE001 - PortAudio says "invalid sample rate" in several ways
            continue
    tried = ", ".join(str(r) for r in candidates if r)
    raise UserError(f"device '{device.name}' does not capture {channels} channel(s) at {tried} Hz: "
                    f"give another --sample-rate")


# ---- files and synthetic signals -----------------------------------------------------------------


class FileSource(_RingSource):
    """Plays an audio file in real time into the ring, so that a set can be rehearsed from a file.

    Without ``output_device`` a pacing thread feeds the ring at wall-clock speed; with one, the output
    stream's callback feeds both the device and the ring, so what is heard is what is captured.

    Args:
        path: any audio file :func:`~tpos_live.audio.decode.decode_audio` reads.
        output_device: play it here too (index or name, as for capture); None plays silently.
        loop: start over at the end; otherwise the state becomes "finished".
        channel, gain_db: as in :class:`CaptureConfig`.
        sample_rate: decode at this rate (the encoder's, to spare resampling; an output device that
            cannot play it gets its default rate); None keeps the file's.
    """

    def __init__(self, path: str | Path, output_device: int | str | None = None, loop: bool = False,
                 channel: int | None = None, gain_db: float = 0.0, sample_rate: int | None = None,
                 buffer_seconds: float = 30.0, report: Reporter | None = None,
                 stall_seconds: float = 2.0) -> None:
        audio = decode_audio(path, sample_rate=sample_rate)
        self.output = None
        if output_device is not None:
            self.output = find_device(output_device, kind="output")
            rate = _playback_rate(self.output, audio.channels, audio.sample_rate)
            if rate != audio.sample_rate:
                audio = decode_audio(path, sample_rate=rate)
        if channel is not None and channel >= audio.channels:
            raise UserError(f"'{path}' has {audio.channels} channel(s): pick a channel below "
                            f"{audio.channels}")
        self.samples = np.ascontiguousarray(audio.samples.T)  # (n, channels), as a stream delivers them
        self.loop = loop
        self.position = 0
        played_to = f", playing to {self.output.name}" if self.output else ""
        description = f"file {Path(path).name}, {audio.sample_rate} Hz, {audio.channels} ch{played_to}"
        channel_map = ChannelMap(audio.channels, channel, db_to_gain(gain_db))
        super().__init__(description, audio.sample_rate, channel_map, buffer_seconds, report)
        if self.output is None:
            self._driver = _Pacer(self._next_block, self.ring, on_end=self._finish)
        else:
            timing = _StreamTiming(stall_seconds, first_audio_seconds=5.0, first_retry_seconds=0.25,
                                   longest_retry_seconds=4.0)
            self._driver = _StreamSupervisor(self, self._open_stream, self.output.name, timing,
                                             before_reopen=lambda: None)

    def start(self) -> None:
        self.state = "running"
        self._driver.start()

    def stop(self) -> None:
        self._driver.stop()
        if self.state != "finished":
            self.state = "stopped"

    def _finish(self) -> None:
        self.state = "finished"

    def _next_block(self, count: int) -> np.ndarray | None:
        """The next ``count`` frames of the file (zero-padded at its end), None once it has ended."""
        total = len(self.samples)
        if self.position >= total and not self.loop:
            return None
        if self.loop:
            indices = (self.position + np.arange(count)) % total
            block = self.samples[indices]
        else:
            block = np.zeros((count, self.samples.shape[1]), np.float32)
            part = self.samples[self.position : self.position + count]
            block[: len(part)] = part
        self.position += count
        return block

    def _play(self, outdata: np.ndarray, frames: int, time_info, status) -> None:
        block = self._next_block(frames)
        if block is None:
            outdata.fill(0)
            self._finish()
            raise sounddevice().CallbackStop
        outdata[:] = block
        self.ring.write(block)

    def _open_stream(self, on_finished: Callable[[], None]):
        sd = sounddevice()
        stream = sd.OutputStream(device=self.output.index, samplerate=self.sample_rate,
                                 channels=self.samples.shape[1], dtype="float32", callback=self._play,
                                 finished_callback=on_finished)
        stream.start()
        return stream


def _playback_rate(device: DeviceInfo, channels: int, file_rate: int) -> int:
    sd = sounddevice()
    for rate in (file_rate, round(device.default_sample_rate)):
        try:
            sd.check_output_settings(device=device.index, channels=channels, dtype="float32", samplerate=rate)
            return rate
        except Exception:  # noqa: BLE001 - PortAudio says "invalid sample rate" in several ways
            continue
    raise UserError(f"output device '{device.name}' cannot play {channels} channel(s) at {file_rate} Hz or "
                    f"its default rate: pick another output device")


Signal = Callable[[int, int], np.ndarray]
"""``signal(start, count)`` -> ``(count, channels)`` float32: samples ``start .. start + count``."""


def tone(freq: float, sample_rate: int, amplitude: float = 0.5, channels: int = 1) -> Signal:
    """A sine at ``freq`` Hz."""
    def signal(start: int, count: int) -> np.ndarray:
        t = (start + np.arange(count)) / sample_rate
        wave = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        return np.repeat(wave[:, None], channels, axis=1)
    return signal


def noise(amplitude: float = 0.3, channels: int = 1, seed: int = 0) -> Signal:
    """White noise; each sample depends only on its index (drawn in seeded chunks of ``_NOISE_CHUNK``)."""
    def chunk(number: int) -> np.ndarray:
        generator = np.random.default_rng([seed, number])
        return (amplitude * generator.standard_normal((_NOISE_CHUNK, channels))).astype(np.float32)

    def signal(start: int, count: int) -> np.ndarray:
        first, last = start // _NOISE_CHUNK, (start + count - 1) // _NOISE_CHUNK
        run = np.concatenate([chunk(n) for n in range(first, last + 1)])
        offset = start - first * _NOISE_CHUNK
        return run[offset : offset + count]
    return signal


_NOISE_CHUNK = 4096


def silence(channels: int = 1) -> Signal:
    def signal(start: int, count: int) -> np.ndarray:
        return np.zeros((count, channels), np.float32)
    return signal


def sequence(parts: Sequence[tuple[float, Signal]], sample_rate: int, loop: bool = True) -> Signal:
    """Signals one after another, ``(seconds, signal)`` each; after the last, start over (or silence)."""
    lengths = np.array([round(seconds * sample_rate) for seconds, _ in parts])
    edges = np.concatenate([[0], np.cumsum(lengths)])
    period = int(edges[-1])
    channels = parts[0][1](0, 1).shape[1]

    def signal(start: int, count: int) -> np.ndarray:
        out = np.zeros((count, channels), np.float32)
        offset = 0
        while offset < count:  # one run per part the block touches
            index = start + offset
            if index >= period and not loop:
                break
            position = index % period
            part = int(np.searchsorted(edges, position, side="right") - 1)
            run = min(count - offset, int(edges[part + 1]) - position)
            out[offset : offset + run] = parts[part][1](index, run)
            offset += run
        return out

    return signal


def demo_pattern(sample_rate: int, seconds: float = 2.0, channels: int = 1) -> Signal:
    """Silence, noise, a 440 Hz tone, a 1760 Hz tone, ``seconds`` each, over and over."""
    return sequence([(seconds, silence(channels)), (seconds, noise(channels=channels)),
                     (seconds, tone(440.0, sample_rate, channels=channels)),
                     (seconds, tone(1760.0, sample_rate, channels=channels))], sample_rate)


class SyntheticSource(_RingSource):
    """A generated signal at real-time pace: a source for trying the engine without a sound card.

    ``signal`` may be replaced while it runs (the next block comes from the new one).
    """

    def __init__(self, signal: Signal, sample_rate: int = 44100, channels: int = 1, gain_db: float = 0.0,
                 buffer_seconds: float = 30.0, report: Reporter | None = None,
                 name: str = "synthetic") -> None:
        super().__init__(f"{name}, {sample_rate} Hz, {channels} ch", sample_rate,
                         ChannelMap(channels, None, db_to_gain(gain_db)), buffer_seconds, report)
        self.signal = signal
        self.position = 0
        self._pacer = _Pacer(self._next_block, self.ring)

    def start(self) -> None:
        self.state = "running"
        self._pacer.start()

    def stop(self) -> None:
        self._pacer.stop()
        self.state = "stopped"

    def _next_block(self, count: int) -> np.ndarray:
        block = self.signal(self.position, count)
        self.position += count
        return block
