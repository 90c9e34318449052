"""Decode an audio file (or a video's sound track) to float32 samples through PyAV / FFmpeg."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.audio.resampler import AudioResampler

from tpos_live.errors import UserError

_LAYOUTS = {1: "mono", 2: "stereo"}
_RESAMPLE_BLOCK = 1 << 16  # samples per frame handed to the resampler: memory stays at the result's size


@dataclass(frozen=True)
class Audio:
    """Decoded audio: float32 samples of shape (channels, n) in [-1, 1] at ``sample_rate`` Hz."""

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        if self.samples.ndim != 2 or self.samples.dtype != np.float32:
            raise ValueError(
                "samples must be float32 of shape (channels, n), "
                f"got {self.samples.dtype} {self.samples.shape}"
            )
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")

    @property
    def channels(self) -> int:
        return self.samples.shape[0]

    @property
    def num_samples(self) -> int:
        return self.samples.shape[1]

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / self.sample_rate

    def mono(self) -> np.ndarray:
        """The mean of the channels, float32 of shape (n,)."""
        return self.samples.mean(axis=0, dtype=np.float32)


def decode_audio(path: str | Path, sample_rate: int | None = None, channels: int | None = None) -> Audio:
    """Decode the first audio stream of ``path`` to float32.

    Args:
        path: any file FFmpeg reads: wav, flac, ogg, mp3, m4a, or a video with a sound track.
        sample_rate: resample to this rate (FFmpeg's resampler); None keeps the file's rate.
        channels: 1 (mono) or 2 (stereo); None keeps mono or stereo and mixes more channels down to stereo.

    Raises:
        UserError: the file is missing, empty, not decodable, or has no sound in it.
    """
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if channels is not None and channels not in _LAYOUTS:
        raise ValueError(f"channels must be 1, 2 or None, got {channels}")
    path = _check_input_file(path)
    try:
        with av.open(str(path)) as container:
            return _decode_first_audio_stream(container, path, sample_rate, channels)
    except (av.FFmpegError, OSError) as error:
        reason = error.strerror or error.__class__.__name__
        raise UserError(
            f"cannot decode audio file '{path}' ({reason}): give an uncorrupted audio or video file"
        ) from error


def resample(audio: Audio, sample_rate: int, channels: int) -> Audio:
    """``audio`` at another rate and channel count, through the resampler :func:`decode_audio` uses (so
    the result equals decoding the file again at that rate: a file is decoded once per render)."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if channels not in _LAYOUTS or audio.channels not in _LAYOUTS:
        raise ValueError(f"channels must be 1 or 2, got {channels} from {audio.channels}")
    resampler = _resampler(_LAYOUTS[channels], sample_rate)
    chunks = []
    for start in range(0, audio.num_samples, _RESAMPLE_BLOCK):
        block = np.ascontiguousarray(audio.samples[:, start:start + _RESAMPLE_BLOCK])
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=_LAYOUTS[audio.channels])
        frame.sample_rate = audio.sample_rate
        chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
    chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((channels, 0), np.float32)
    return Audio(samples=samples, sample_rate=sample_rate)


def _resampler(layout: str, rate: int) -> AudioResampler:
    # Scale downmixes (stereo -> mono, 5.1 -> stereo) so that they cannot leave [-1, 1].
    return AudioResampler(format="fltp", layout=layout, rate=rate, options={"rematrix_maxval": "1.0"})


def _check_input_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"audio file '{path}' does not exist: check the path")
    if path.is_dir():
        raise UserError(f"audio file '{path}' is a folder: give a file")
    if path.stat().st_size == 0:
        raise UserError(f"audio file '{path}' is empty (0 bytes): give a file with sound in it")
    return path


def _decode_first_audio_stream(
    container: av.container.InputContainer, path: Path, sample_rate: int | None, channels: int | None
) -> Audio:
    if not container.streams.audio:
        raise UserError(f"audio file '{path}' has no audio stream: give a file with sound in it")
    stream = container.streams.audio[0]
    out_rate = sample_rate or stream.codec_context.sample_rate
    source_channels = stream.codec_context.channels
    out_channels = channels or min(source_channels, 2)
    # FFmpeg spreads mono over stereo at -3 dB; a copy of the mono signal in both channels keeps its level.
    mono_to_stereo = source_channels == 1 and out_channels == 2
    resampler = _resampler(_LAYOUTS[1 if mono_to_stereo else out_channels], out_rate)

    # Frames are converted as they are decoded, so only the float32 result grows with the file's length.
    chunks = []
    for frame in container.decode(stream):
        chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
    chunks.extend(out.to_ndarray() for out in resampler.resample(None))  # the resampler's tail

    if not chunks or sum(chunk.shape[1] for chunk in chunks) == 0:
        raise UserError(f"audio file '{path}' decoded to no samples: give a file with sound in it")
    samples = np.concatenate(chunks, axis=1)
    del chunks
    if mono_to_stereo:
        samples = np.repeat(samples, 2, axis=0)
    return Audio(samples=samples, sample_rate=out_rate)
