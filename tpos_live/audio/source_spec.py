"""Which sound a live session listens to, as a plain spec, and opening it.

    spec = SourceSpec(kind="device", device="USB Audio", gain_db=6.0)
    source = open_source(spec, preferred_rate=44100, report=log)   # not started yet
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tpos_live.errors import UserError
from tpos_live.names import LATENCIES
from tpos_live.reporting import Reporter

if TYPE_CHECKING:
    from tpos_live.audio.decode import Audio

SOURCE_KINDS = ("device", "file", "synthetic")
SYNTHETIC_NAME = "test signal (silence, noise, 440 Hz, 1760 Hz)"


@dataclass(frozen=True)
class SourceSpec:
    """Where the sound comes from: a capture device, a file played in real time, or the test signal.

    Attributes:
        kind: "device", "file" or "synthetic".
        device: with "device": index or (part of) the name; None for the default input.
        file: with "file": the audio file.
        host_api, sample_rate: with "device": where to look for it and the rate to capture at.
        channel: use only this input channel (None: mix down).
        gain_db: input gain.
        play_to, loop: with "file": also play it on this output device; start over at the end.
        latency: with "device": PortAudio's suggested input latency, "low" or "high" (the latency the
            device gives is the source's ``input_latency``, in the stats and the audio-to-frame latency).
    """

    kind: str = "device"
    device: str | None = None
    file: Path | None = None
    host_api: str | None = None
    sample_rate: int | None = None
    channel: int | None = None
    gain_db: float = 0.0
    play_to: str | None = None
    loop: bool = False
    latency: str = "low"

    def __post_init__(self) -> None:
        if self.latency not in LATENCIES:
            raise ValueError(f"latency must be one of {LATENCIES}, got {self.latency!r}")
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"source kind must be one of {SOURCE_KINDS}, got {self.kind!r}")
        if (self.kind == "file") != (self.file is not None):
            raise ValueError("a file source needs its file, and only a file source takes one")
        if self.kind != "file" and (self.play_to is not None or self.loop):
            raise ValueError("--play-to and --loop go with --file: give the file to play")
        if self.kind != "device" and (self.host_api or self.sample_rate or self.device is not None):
            raise ValueError("--device, --host-api and --sample-rate choose how a device captures: leave them "
                             "out with --file or --synthetic")


def open_source(spec: SourceSpec, preferred_rate: int, report: Reporter, decoded: Audio | None = None):
    """The source ``spec`` names, not yet started (a file source resamples ``decoded``, its file decoded
    at its own rate, when given). UserError when it cannot be opened as asked."""
    from tpos_live.audio.capture import CaptureConfig, DeviceSource
    from tpos_live.audio.file_source import FileSource
    from tpos_live.audio.signals import SyntheticSource, demo_pattern

    try:
        if spec.kind == "file":
            return FileSource(spec.file, output_device=spec.play_to, loop=spec.loop, channel=spec.channel,
                              gain_db=spec.gain_db, sample_rate=preferred_rate, report=report, decoded=decoded)
        if spec.kind == "synthetic":
            return SyntheticSource(demo_pattern(preferred_rate), preferred_rate, gain_db=spec.gain_db,
                                   report=report, name=SYNTHETIC_NAME)
        config = CaptureConfig(device=spec.device, host_api=spec.host_api, sample_rate=spec.sample_rate,
                               channel=spec.channel, gain_db=spec.gain_db, latency=spec.latency)
    except ValueError as error:
        raise UserError(str(error)) from None
    return DeviceSource(config, preferred_rate=preferred_rate, report=report)
