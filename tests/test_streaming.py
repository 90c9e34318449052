"""Streaming conditions: a file pushed block by block gives the whole-file conditions, times and weights, for
the TPoS encoder and for the CLAP concept bank, with bounded caches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tpos_live.conditioning.base import TextSpace
from tpos_live.conditioning.checkpoint import random_tpos
from tpos_live.conditioning.clap import TINY_SAMPLE_RATE, ClapConceptProvider, ClapSettings, build_tiny_clap
from tpos_live.conditioning.concepts import default_concepts
from tpos_live.conditioning.streaming import (
    SegmentGrid,
    StreamingConditioner,
    TPoSStreaming,
    as_streamable,
    track_of,
)
from tpos_live.conditioning.tpos_encoder import TPoSConfig

DIM = 32
TPOS_SR = 44100
TPOS_L = TPoSConfig().segment_samples  # 78,848 samples, 1.788 s
TPOS_CONFIG = TPoSConfig(embed_dim=DIM, text_family="tiny", hop_seconds=TPOS_L / 2 / TPOS_SR)


@pytest.fixture(scope="module")
def text_space() -> TextSpace:
    return TextSpace(empty=torch.randn(77, DIM, generator=torch.Generator().manual_seed(1)), family="tiny")


@pytest.fixture(scope="module")
def tpos():
    return random_tpos(TPOS_CONFIG, seed=0)


@pytest.fixture(scope="module")
def clap() -> ClapConceptProvider:
    def prompts(prompt: str) -> torch.Tensor:  # stands in for the diffusion model's text encoder
        return torch.randn(1, 77, DIM, generator=torch.Generator().manual_seed(sum(map(ord, prompt))))

    return ClapConceptProvider(build_tiny_clap(seed=0), default_concepts(), prompts,
                               ClapSettings(segment_seconds=3.0, hop_seconds=0.75), name="clap:tiny",
                               text_family="tiny")


def sound(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A tone that glides, over noise that swells: every window hears something different."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    glide = 0.4 * np.sin(2 * np.pi * (200 * t + 80 * t**2))
    return glide + 0.2 * (t / t[-1]) * rng.standard_normal(len(t))


def assert_same_track(streamed, whole) -> None:
    assert np.array_equal(streamed.times, whole.times)
    assert torch.allclose(streamed.conditions, whole.conditions, rtol=1e-4, atol=1e-5)
    assert np.allclose(streamed.weights, whole.weights, rtol=1e-5, atol=1e-6)


def test_tpos_streamed_hop_by_hop_equals_whole_file(tpos, text_space):
    audio = sound(6.0, TPOS_SR)
    whole = tpos.encode(audio, text_space)
    stream = StreamingConditioner(tpos, text_space)
    grid = stream.grid
    hop, length, segments = grid.hop_samples, grid.segment_samples, grid.window_segments
    assert (hop, length, segments) == (TPOS_L // 2, TPOS_L, 5)
    most_cached = (segments - 1) * length // hop + 1  # the segments the next window and later ones share
    conditions = []
    for start in range(0, len(audio), hop):
        conditions += stream.push(audio[start : start + hop])
        assert stream.cached_segments <= most_cached
        assert stream.buffered_samples <= segments * length + hop
        latest = stream.latest()
        assert latest is None or latest.window == len(conditions) - 1
    assert len(conditions) == grid.windows_complete(len(audio)) < len(whole)
    conditions += stream.flush()
    assert [item.window for item in conditions] == list(range(len(whole)))
    assert_same_track(track_of(conditions), whole)
    assert conditions[0].end_sample == length and conditions[0].time == pytest.approx(length / 2 / TPOS_SR)


def test_latest_only_skips_stale_windows_but_not_their_segments(tpos, text_space):
    audio = sound(4.0, TPOS_SR, seed=1)
    whole = tpos.encode(audio, text_space)
    stream = StreamingConditioner(tpos, text_space)
    (newest,) = stream.push(audio, latest_only=True)
    assert newest.window == stream.grid.windows_complete(len(audio)) - 1
    assert torch.allclose(newest.condition, whole.conditions[newest.window], rtol=1e-4, atol=1e-5)
    assert newest.weight == pytest.approx(whole.weights[newest.window], rel=1e-5)
    assert stream.latest() is newest


def test_clap_streamed_in_uneven_blocks_equals_whole_file(clap, text_space):
    audio = sound(7.3, TINY_SAMPLE_RATE, seed=2)
    whole = clap.encode(audio, text_space)
    assert np.allclose(np.diff(whole.times), 0.75)
    stream = StreamingConditioner(clap, text_space)
    conditions, start = [], 0
    for size in [1, 2999, 12000, 40000, 7, 25000] * 10:  # blocks that complete no, one or several windows
        conditions += stream.push(audio[start : start + size])
        start += size
        assert stream.cached_segments == 0  # one segment per window: nothing is shared
        assert stream.buffered_samples <= stream.grid.segment_samples + 40000
        if start >= len(audio):
            break
    conditions += stream.flush()
    assert_same_track(track_of(conditions), whole)


def test_silence_before_the_start_is_one_cached_segment(tpos, text_space):
    stream = StreamingConditioner(tpos, text_space)
    grid = stream.grid
    # window 0's four older segments all lie before sample 0: one silent segment stands for them
    keys = grid.cache_keys(grid.segment_starts(np.array([0])))
    assert list(keys[0]) == [-TPOS_L, -TPOS_L, -TPOS_L, -TPOS_L, 0]
    assert stream.push(np.zeros(TPOS_L - 1)) == []
    assert stream.latest() is None
    (first,) = stream.push(np.zeros(1))
    assert first.window == 0
    assert stream.cached_segments == 2  # the silent segment and segment 0, which later windows share


def test_grid_and_stream_refuse_misuse(tpos, text_space, clap):
    with pytest.raises(ValueError, match="divide"):
        SegmentGrid(segment_samples=100, hop_samples=30, window_segments=5, sample_rate=1000)
    SegmentGrid(segment_samples=100, hop_samples=30, window_segments=1, sample_rate=1000)  # nothing shared
    assert isinstance(as_streamable(tpos), TPoSStreaming) and as_streamable(clap) is clap
    with pytest.raises(TypeError, match="cannot stream"):
        as_streamable(object())
    stream = StreamingConditioner(clap, text_space)
    with pytest.raises(ValueError, match="mono"):
        stream.push(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="NaN"):
        stream.push(np.array([0.0, np.nan]))
    assert stream.flush() == []  # nothing pushed: no window
    with pytest.raises(RuntimeError, match="flushed"):
        stream.push(np.zeros(10))


# ---- the live encoder stage -------------------------------------------------------------------------


class CountingTPoS:
    """Counts the segments whose CNN features a provider computes (everything else passes through)."""

    def __init__(self, provider) -> None:
        self.provider, self.segments = provider, 0

    def __getattr__(self, name):
        return getattr(self.provider, name)

    def segment_features(self, segments):
        self.segments += len(segments)
        return self.provider.segment_features(segments)


def test_nearest_hop_divides_the_segment():
    from tpos_live.conditioning.streaming import nearest_hop

    assert nearest_hop(TPOS_L, round(0.25 * TPOS_SR)) == 11264 and TPOS_L % 11264 == 0
    assert nearest_hop(TPOS_L, 10**9) == TPOS_L and nearest_hop(TPOS_L, 0) == 1


@pytest.mark.parametrize("capture_rate", [TPOS_SR, 48000])
def test_the_encoder_stage_streams_and_equals_whole_window_encoding(text_space, capture_rate):
    from tpos_live.audio.signals import SyntheticSource, silence
    from tpos_live.conditioning.streaming import TPoSStreaming
    from tpos_live.live.encoder_stage import EncoderStage, window_samples
    from tpos_live.live.mailbox import Mailbox
    from tpos_live.live.source_feed import SourceFeed
    from tpos_live.live.stats import LiveStats

    plain = random_tpos(TPoSConfig(embed_dim=DIM, text_family="tiny"), seed=0)
    counting = CountingTPoS(plain)
    stream_view = TPoSStreaming(counting, hop_samples=11264)  # what the stage makes of a 0.25 s hop
    source = SyntheticSource(silence(), capture_rate)  # never started: the test writes the ring itself
    audio = sound(26.0, capture_rate, seed=3).astype(np.float32)
    stage = EncoderStage(stream_view, text_space, SourceFeed(source), 0.25, Mailbox(), LiveStats(1.0), lambda *a: None)
    window = window_samples(plain)
    hop = round(0.25 * capture_rate)
    first = int(window * capture_rate / TPOS_SR) + hop  # a whole window of history, as a running source has
    source.ring.write(audio[:first, None])
    results = [stage.encode_now()]
    assert counting.segments == 5  # the first window: every one of its segments
    computed = []  # segment CNNs per published hop
    for start in range(first, len(audio) - hop, hop):
        before = counting.segments
        source.ring.write(audio[start : start + hop, None])
        result = stage.encode_now()
        if result is not None:
            results.append(result)
            computed.append(counting.segments - before)
    # A window shares its older segments with the windows L/H hops before it: once the stream has run
    # that long for every segment (N * L / H hops), each hop computes the newest segment's CNN only.
    warm_up = 5 * TPOS_L // 11264
    assert len(computed) > warm_up + 10 and max(computed) <= 5
    assert computed[warm_up:] == [1] * (len(computed) - warm_up)
    if capture_rate != TPOS_SR:
        return  # resampled: the windows hold other samples than the capture's (checked above: it streams)
    for result in results[::4]:
        whole = plain.encode(audio[result.audio_end - window : result.audio_end].astype(np.float64), text_space)
        assert torch.allclose(result.condition, whole.conditions[-1], rtol=1e-4, atol=1e-5)
        assert result.weight == pytest.approx(float(whole.weights[-1]), rel=1e-5)
