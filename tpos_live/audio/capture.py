"""Capturing from a sound device: the capture options, and the source that reads from the device.

The capture callback only copies into the source's ring and counts overflows: no Python work that
could miss the audio deadline.

A device that disappears or errors is noticed (the stream ends on its own, or no audio arrives for
``stall_seconds``), reported, and reopened with exponential backoff until it is back.

    source = DeviceSource(CaptureConfig(device="USB Audio", gain_db=6.0), preferred_rate=44100)
    source.start()
    window, end = source.mono_window(44100, rate=44100)   # the last second, mixed down, gain applied
    source.stop()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tpos_live.audio.channels import ChannelMap, db_to_gain
from tpos_live.audio.devices import DeviceInfo, find_device, refresh_devices, sounddevice
from tpos_live.audio.sources import RingSource
from tpos_live.audio.stream import StreamSupervisor, StreamTiming
from tpos_live.errors import UserError, first_line
from tpos_live.reporting import Reporter


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
        latency: PortAudio's suggested latency: "low", "high" or seconds (the live command's
            default is SourceSpec's "low"; the stream's actual latency becomes ``input_latency``).
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
    def timing(self) -> StreamTiming:
        return StreamTiming(self.stall_seconds, self.first_audio_seconds, *self.retry_seconds)


class DeviceSource(RingSource):
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
        self._supervisor = StreamSupervisor(self, self._open_stream, device.name, config.timing,
                                             before_reopen=self._find_again)

    def start(self) -> None:
        self.state = "starting"
        try:
            self._supervisor.start()
        except Exception as error:
            self.state = "stopped"
            raise UserError(f"cannot open audio device '{self.device.name}' ({first_line(error)}): check it "
                            f"is connected and free, or pick another with --device") from error

    def stop(self) -> None:
        self._supervisor.stop()
        self.state = "stopped"

    @property
    def device_latency(self) -> float | None:
        """The input latency the open stream reports, seconds (None before it opens); capture times,
        and with them the audio-to-frame latency, already count it."""
        return self.input_latency if self._supervisor.stream is not None else None

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
