"""Read back what a media file holds: codecs, size, frame count, and the durations of its tracks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

from tpos_live.errors import UserError


@dataclass(frozen=True)
class MediaInfo:
    """Facts about a media file's first video and first audio stream (None / 0 where a stream is absent)."""

    video_codec: str | None
    audio_codec: str | None
    width: int
    height: int
    pix_fmt: str | None
    frames: int  # counted by decoding, not taken from the header
    fps: float
    video_duration: float  # seconds
    audio_duration: float  # seconds
    audio_sample_rate: int | None


def probe_media(path: str | Path) -> MediaInfo:
    """Probe ``path``, decoding it to count the video frames.

    Durations come from each stream's duration in its time base (what the muxer wrote, edit lists
    applied). Where a container leaves that out (e.g. Matroska), they come from what was decoded: the
    sum of the video frames' durations, and the number of audio samples over the sample rate.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"media file '{path}' does not exist or is not a file: check the path")
    try:
        with av.open(str(path)) as container:
            # Streams are readable only while their container is open (PyAV >= 18.1 raises after).
            video = container.streams.video[0] if container.streams.video else None
            audio = container.streams.audio[0] if container.streams.audio else None
            return _media_info(video, audio, _decode_all(container, video, audio))
    except av.FFmpegError as error:
        raise UserError(
            f"cannot read media file '{path}' ({error.strerror}): give an uncorrupted file"
        ) from error


def _media_info(video: av.VideoStream | None, audio: av.AudioStream | None, decoded: _Decoded) -> MediaInfo:
    video_duration, audio_duration = 0.0, 0.0
    if video is not None:
        ticks = video.duration if video.duration is not None else decoded.video_ticks
        video_duration = float(ticks * video.time_base)
    if audio is not None:
        audio_duration = (
            float(audio.duration * audio.time_base)
            if audio.duration is not None
            else decoded.audio_samples / audio.codec_context.sample_rate
        )
    return MediaInfo(
        video_codec=video.codec_context.name if video else None,
        audio_codec=audio.codec_context.name if audio else None,
        width=video.codec_context.width if video else 0,
        height=video.codec_context.height if video else 0,
        pix_fmt=video.codec_context.pix_fmt if video else None,
        frames=decoded.video_frames,
        fps=float(video.average_rate or video.guessed_rate or 0) if video else 0.0,
        video_duration=video_duration,
        audio_duration=audio_duration,
        audio_sample_rate=audio.codec_context.sample_rate if audio else None,
    )


@dataclass
class _Decoded:
    video_frames: int = 0
    video_ticks: int = 0  # sum of frame durations, in the video stream's time base
    audio_samples: int = 0


def _decode_all(container: av.container.InputContainer, video, audio) -> _Decoded:
    """Decode the first video and audio streams in one pass, counting what comes out."""
    decoded = _Decoded()
    streams = [stream for stream in (video, audio) if stream is not None]
    if not streams:
        return decoded
    for packet in container.demux(streams):
        for frame in packet.decode():
            if packet.stream is video:
                decoded.video_frames += 1
                decoded.video_ticks += frame.duration or 0
            else:
                decoded.audio_samples += frame.samples
    return decoded
