"""An audio file played in real time into a ring (and optionally to a speaker), to rehearse a set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tpos_live.audio.channels import ChannelMap, db_to_gain
from tpos_live.audio.decode import Audio, decode_audio, resample
from tpos_live.audio.devices import DeviceInfo, find_device, sounddevice
from tpos_live.audio.sources import Pacer, RingSource
from tpos_live.audio.stream import StreamSupervisor, StreamTiming
from tpos_live.errors import UserError
from tpos_live.reporting import Reporter


class FileSource(RingSource):
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
        decoded: the file already decoded at its own rate (by the checks before the models loaded): it is
            resampled instead of decoded again.
    """

    def __init__(self, path: str | Path, output_device: int | str | None = None, loop: bool = False,
                 channel: int | None = None, gain_db: float = 0.0, sample_rate: int | None = None,
                 buffer_seconds: float = 30.0, report: Reporter | None = None,
                 stall_seconds: float = 2.0, decoded: Audio | None = None) -> None:
        audio = _at_rate(path, decoded, sample_rate)
        self.output = None
        if output_device is not None:
            self.output = find_device(output_device, kind="output")
            rate = _playback_rate(self.output, audio.channels, audio.sample_rate)
            if rate != audio.sample_rate:
                audio = _at_rate(path, decoded, rate)
        check_channel(path, audio, channel)
        self.samples = np.ascontiguousarray(audio.samples.T)  # (n, channels), as a stream delivers them
        self.loop = loop
        self.position = 0
        played_to = f", playing to {self.output.name}" if self.output else ""
        description = f"file {Path(path).name}, {audio.sample_rate} Hz, {audio.channels} ch{played_to}"
        channel_map = ChannelMap(audio.channels, channel, db_to_gain(gain_db))
        super().__init__(description, audio.sample_rate, channel_map, buffer_seconds, report)
        if self.output is None:
            self._driver = Pacer(self._next_block, self.ring, on_end=self._finish, report=self.report)
        else:
            timing = StreamTiming(stall_seconds, first_audio_seconds=5.0, first_retry_seconds=0.25,
                                   longest_retry_seconds=4.0)
            self._driver = StreamSupervisor(self, self._open_stream, self.output.name, timing,
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


def check_channel(path: str | Path, audio: Audio, channel: int | None) -> None:
    """UserError when ``channel`` (None: all, mixed down) is not one of the file's."""
    if channel is not None and channel >= audio.channels:
        raise UserError(f"'{path}' has {audio.channels} channel(s): pick a channel below {audio.channels}")


def _at_rate(path: str | Path, decoded: Audio | None, rate: int | None) -> Audio:
    if decoded is None:
        return decode_audio(path, sample_rate=rate)
    if rate is None or rate == decoded.sample_rate:
        return decoded
    return resample(decoded, rate, decoded.channels)


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
