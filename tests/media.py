"""Fixture media for tests: tones written to real files with PyAV's encoders.

    from media import write_tone, write_tone_video   # tests/ is on sys.path under pytest
    write_tone(tmp_path / "a.wav", seconds=1.0, freq=440.0, sample_rate=22050, channels=2)
    write_tone(tmp_path / "a.ogg", codec="libopus", sample_rate=48000)

The codec defaults from the file's extension (see ``DEFAULT_CODECS``). The same tone goes into every channel.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

DEFAULT_CODECS = {
    ".wav": "pcm_s16le",
    ".flac": "flac",
    ".ogg": "libopus",
    ".opus": "libopus",
    ".mp3": "libmp3lame",
    ".m4a": "aac",
    ".aac": "aac",
}
# The mp4 muxer is chosen by name: ".m4a" alone does not name a format FFmpeg knows for writing.
_CONTAINER_FORMATS = {".m4a": "mp4", ".aac": "adts"}
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def tone(
    seconds: float, freq: float, sample_rate: int, channels: int = 1, amplitude: float = 0.5
) -> np.ndarray:
    """A sine tone as float32, shape (channels, n), the same in every channel."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    wave = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(wave[None, :], channels, axis=0)


def write_tone(
    path: str | Path,
    seconds: float = 1.0,
    freq: float = 440.0,
    sample_rate: int = 44100,
    channels: int = 1,
    codec: str | None = None,
    amplitude: float = 0.5,
) -> Path:
    """Write a sine tone to an audio file; the codec defaults from the extension. Returns the path."""
    path = Path(path)
    codec = codec or DEFAULT_CODECS[path.suffix.lower()]
    with av.open(str(path), "w", format=_CONTAINER_FORMATS.get(path.suffix.lower())) as container:
        stream = _add_audio_stream(container, codec, sample_rate, channels)
        _encode_audio(container, stream, tone(seconds, freq, sample_rate, channels, amplitude))
    return path


def write_tone_video(
    path: str | Path,
    seconds: float = 1.0,
    freq: float = 440.0,
    sample_rate: int = 44100,
    channels: int = 2,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
) -> Path:
    """Write an mp4 with an H.264 video track (grey frames) and an AAC tone. Returns the path."""
    path = Path(path)
    width, height = size
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=Fraction(fps), options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = _add_audio_stream(container, "aac", sample_rate, channels)
        for index in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 128, np.uint8), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        _encode_audio(container, audio, tone(seconds, freq, sample_rate, channels))
    return path


def _add_audio_stream(container, codec: str, sample_rate: int, channels: int):
    # FFmpeg's own vorbis encoder is marked experimental: it must be asked for explicitly.
    options = {"strict": "experimental"} if codec == "vorbis" else {}
    return container.add_stream(codec, rate=sample_rate, layout=_LAYOUTS[channels], options=options)


def _encode_audio(container, stream, samples: np.ndarray) -> None:
    # PyAV converts to the encoder's sample format and frame size on the way in.
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=_LAYOUTS[samples.shape[0]])
    frame.sample_rate = stream.codec_context.sample_rate
    # A pts lets the mp4 muxer write the edit list that hides the AAC encoder's priming samples.
    frame.pts, frame.time_base = 0, Fraction(1, frame.sample_rate)
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_video_only(path: str | Path) -> Path:
    """Write an mp4 with three black H.264 frames and no audio stream. Returns the path."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_frames_video(path: str | Path, frames, fps: int, audio: np.ndarray | None = None,
                       sample_rate: int = 22050) -> Path:
    """Write an mp4 of ``frames`` (uint8 RGB arrays of one even size, any iterable) at ``fps``, with
    ``audio`` (mono float32) as its AAC track if given. Returns the path."""
    path = Path(path)
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=Fraction(fps), options={"preset": "ultrafast", "crf": "12"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        stream = _add_audio_stream(container, "aac", sample_rate, 1) if audio is not None else None
        for index, rgb in enumerate([first, *frames]):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if stream is not None:
            _encode_audio(container, stream, np.asarray(audio, np.float32)[None])
    return path


def write_wav(path: Path, left: np.ndarray, right: np.ndarray | None = None, rate: int = 44100) -> Path:
    """A float32 stereo WAV at ``rate``: the same sound in both channels, or ``left`` and ``right``."""
    samples = np.stack([left, left if right is None else right]).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_f32le", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
