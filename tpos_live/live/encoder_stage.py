"""The encoder stage: the source's sound streamed into the audio conditioning, a condition per hop.

    source feed --(every hop)--> EncoderStage --conditions mailbox--> the render or keyframe stage
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from tpos_live.audio.channels import StreamResampler
from tpos_live.audio.sources import AudioSource
from tpos_live.conditioning.base import ConditionProvider, TextSpace
from tpos_live.conditioning.streaming import StreamingConditioner, as_streamable
from tpos_live.live.mailbox import Mailbox
from tpos_live.live.source_feed import SourceFeed
from tpos_live.live.stats import LiveStats
from tpos_live.live.streams import BACKGROUND_PRIORITY, finish_work, stage_stream
from tpos_live.reporting import Reporter
from tpos_live.worker import Stage


@dataclass(frozen=True)
class LiveCondition:
    """One encoder result: the condition for the audio window that ended at ``audio_end``.

    Attributes:
        condition: ``(77, D)`` float32 on the compute device, ready for the UNet.
        weight: its attention weight alpha (the magnitude TPoS gives the newest segment).
        audio_end: absolute index (in the source's ring) just past the window's newest sample.
        audio_time: monotonic time at which that newest sample was captured.
        published: monotonic time the condition was ready.
        index: 1 for the first condition, then counting up.
    """

    condition: torch.Tensor
    weight: float
    audio_end: int
    audio_time: float
    published: float
    index: int
    host: torch.Tensor | None = None  # the condition on the CPU (float32), for the slerp's angle

    @property
    def on_host(self) -> torch.Tensor:
        return self.condition if self.host is None else self.host


def window_samples(provider: ConditionProvider) -> int:
    """Samples (at the provider's rate) of one encoder window: its segment grid's (CLAP: one segment),
    or N segments of its config (TPoS: 5 x ~1.79 s). ValueError for a provider that says neither."""
    grid = getattr(provider, "grid", None)
    if grid is not None:
        return grid.window_segments * grid.segment_samples
    config = getattr(provider, "config", None)
    if config is None or not hasattr(config, "segment_samples"):
        raise ValueError(f"provider '{provider.name}' does not say its window (a segment grid, or "
                         f"config.segments and config.segment_samples)")
    return config.segments * config.segment_samples


class EncoderStage(Stage):
    """Streams the source's sound into the provider and publishes each new window's condition at once.

    Windows lie on the provider's streaming grid (:mod:`tpos_live.conditioning.streaming`): for a TPoS
    encoder, a hop of the divisor of its segment length nearest ``hop_seconds`` (0.25 s gives 0.255 s at
    44.1 kHz); a CLAP bank keeps its own. So each hop computes the newest segment's CNN features and one
    LSTM/attention/MAP window; the older segments' features come from the stream's cache. The stage
    wakes when the next window's last sample is due, so a condition is published as soon as its audio
    is there. When an encode takes longer than a hop, the stale windows are skipped, not caught up.
    Without new audio (device lost, not started) nothing is published. A new stream starts, seeded with
    the newest window of sound, when the feed's source or the provider is swapped (``SourceFeed.swap``,
    :meth:`follow_provider`).
    """

    name = "encoder"
    longest_wait = 0.05  # seconds: a swapped source or provider is noticed at least this often

    def __init__(self, provider: ConditionProvider, text_space: TextSpace, sound: SourceFeed,
                 hop_seconds: float, conditions: Mailbox[LiveCondition], stats: LiveStats,
                 report: Reporter, device: torch.device | str = "cpu") -> None:
        super().__init__(report)
        self.provider, self.text_space, self.sound = provider, text_space, sound
        self.device = torch.device(device)  # where the renderer wants the conditions
        self.hop_seconds = hop_seconds
        self.conditions, self.stats = conditions, stats
        _check_streams(provider)
        self.latest: LiveCondition | None = None
        self._stream: _SourceStream | None = None
        self._count = 0

    def _run(self) -> None:
        with stage_stream(self.device, BACKGROUND_PRIORITY):  # on a GPU: never queued before a frame
            while not self._stop.wait(self._wait()):
                self.encode_now()

    def _wait(self) -> float:
        stream = self._stream
        if stream is None:
            return 0.0
        due = stream.conditioner.samples_to_next_window / stream.provider.sample_rate
        return min(max(due, 0.002), self.longest_wait)

    @property
    def source(self) -> AudioSource:
        """The source the sound comes from now."""
        return self.sound.current

    def follow_provider(self, provider: ConditionProvider) -> None:
        _check_streams(provider)
        self.provider = provider

    def encode_now(self) -> LiveCondition | None:
        """Push the sound captured since the last call; publish the newest window it completed (None when
        none completed, or the encoder failed)."""
        source, provider = self.sound.current, self.provider  # one pair for the whole call, even if swapped meanwhile
        stream = self._stream
        if stream is None or stream.source is not source or stream.provider is not provider:
            stream = self._stream = _SourceStream(source, provider, self.text_space, self.hop_seconds)
        block = stream.read()
        if not len(block):
            return None
        started = time.perf_counter()
        try:
            done = stream.conditioner.push(block, latest_only=True)
        except Exception as error:  # noqa: BLE001 - counted and reported; a new stream tries again
            self._stream = None
            self.stats.add("encoder_errors")
            self.report("error", f"audio encoder failed ({type(error).__name__}: {error}); keeping the last "
                                 f"condition")
            return None
        if not done:
            return None
        self.stats.stage("encode", time.perf_counter() - started)
        return self._publish(stream, done[-1])

    def _publish(self, stream: _SourceStream, streamed) -> LiveCondition:
        end = stream.ring_index(streamed.end_sample)
        captured = stream.source.capture_time(end - 1)
        now = time.monotonic()
        self._count += 1
        host = streamed.condition.detach().float().cpu()
        condition = host.to(self.device)  # uploaded once per hop, not once per frame
        finish_work(self.device)  # the upload is done before the renderer sees it
        live = LiveCondition(condition, streamed.weight, end, now if captured is None else captured, now,
                             self._count, host)
        if self.conditions.put(live):
            self.stats.add("dropped_conditions")
        self.stats.add("conditions")
        self.latest = live
        return live


def _check_streams(provider: ConditionProvider) -> None:
    """ValueError for a provider the encoder stage cannot stream (no window, or no streaming form)."""
    window_samples(provider)
    try:
        as_streamable(provider)
    except TypeError as error:
        raise ValueError(str(error)) from None


class _SourceStream:
    """One source's sound streaming into one provider: a ring reader, a resampler to the provider's
    rate (when the device captures at another), and the streaming conditioner. Stream sample 0 is ring
    index ``origin``: the start of the newest window of sound when the stream was opened."""

    def __init__(self, source: AudioSource, provider: ConditionProvider, text_space: TextSpace,
                 hop_seconds: float) -> None:
        self.source, self.provider = source, provider
        self.conditioner = StreamingConditioner(provider, text_space, hop_seconds=hop_seconds)
        written, history = source.ring.written, math.ceil(window_samples(provider) * source.sample_rate
                                                          / provider.sample_rate)
        self.origin = max(written - history, written - source.ring.capacity, 0)
        self.reader = source.ring.reader(self.origin)
        self.resample = StreamResampler(source.sample_rate, provider.sample_rate)

    def read(self) -> np.ndarray:
        """The new sound, mono with gain, at the provider's rate."""
        return self.resample(self.source.channel_map.mono(self.reader.read()))

    def ring_index(self, stream_sample: int) -> int:
        """The ring index of a stream sample (at the provider's rate)."""
        return self.origin + round(stream_sample * self.source.sample_rate / self.provider.sample_rate)
