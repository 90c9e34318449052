"""Write frames (and the sound under them) to an H.264 + AAC mp4 as they arrive.

The file is written under a temporary name in the target folder and renamed onto the target only when it
is complete, so a crash or an abort never leaves a half-written video at the path the user asked for.
"""

from __future__ import annotations

import contextlib
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.audio.fifo import AudioFifo

from tpos_live.errors import UserError

X264_OPTIONS = {
    # "fast" is close to "medium" in quality per bit and leaves CPU for rendering when recording live.
    "preset": "fast",
    # Tag the colours so players convert back to RGB with the matrix swscale used (BT.601, limited range).
    "x264-params": "colorprim=smpte170m:transfer=smpte170m:colormatrix=smpte170m:range=tv",
}
AUDIO_BITRATE = 192_000
# A standard mp4 keeps an index entry for every packet in memory until close (its moov, moved to the
# front for web players); about 18 MB an hour at 30 fps with audio, which a show's recording must not
# accumulate. A fragmented one writes a small index with each fragment (one per keyframe) instead;
# delay_moov writes its header after the first fragment, when the AAC priming is known and can be cut by an
# edit list (else the sound plays 23 ms late).
MP4_LAYOUTS = {  # the movflags of each layout
    "standard": "+faststart",
    "fragmented": "+frag_keyframe+empty_moov+delay_moov+default_base_moof",
}
_LAYOUTS = {1: "mono", 2: "stereo"}


def check_output_path(path: str | Path, example: str = "out.mp4") -> Path:
    """Return ``path`` as a Path if a file can be written there; raise UserError saying why not (a folder:
    suggesting the file ``example`` in it)."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise UserError(f"output path '{path}' is a folder: give a file name such as '{path / example}'")
    if not folder.is_dir():
        raise UserError(f"output folder '{folder}' does not exist: create it or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"output folder '{folder}' is not writable: choose another path")
    return path


class VideoWriter:
    """Encode RGB frames to H.264 (yuv420p) and float audio to AAC in one mp4, as they arrive.

    Use as a context manager: leaving the block normally calls ``close()`` (the file appears at ``path``);
    leaving it with an exception calls ``abort()`` (nothing appears). At close the audio is padded with
    silence or trimmed so that it lasts exactly as long as the video (frames / fps).

    Args:
        path: the mp4 to write.
        fps: frames per second.
        width, height: frame size in pixels; both even (yuv420p halves the colour planes).
        audio_sample_rate: rate of the samples given to ``write_audio``; None writes a video-only file.
        audio_channels: 1 or 2.
        crf: x264 constant rate factor, 0 (lossless) to 51; 18 is visually transparent.
        fragmented: write a fragmented mp4 (an index per fragment, flushed as it goes), so memory stays
            flat however long the recording; the default is a standard mp4 with its index up front.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float,
        width: int,
        height: int,
        audio_sample_rate: int | None = None,
        audio_channels: int = 2,
        crf: int = 18,
        fragmented: bool = False,
    ) -> None:
        _validate_settings(fps, width, height, audio_sample_rate, audio_channels, crf)
        self.path = check_output_path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.width, self.height = width, height
        self.audio_sample_rate = audio_sample_rate
        self.audio_channels = audio_channels
        self.frames_written = 0
        self._partial_path = self.path.with_name(f".{self.path.stem}.part{self.path.suffix or '.mp4'}")
        self._audio_encoded = 0  # samples per channel handed to the encoder so far
        self._fifo = AudioFifo()
        self._finished = False

        movflags = MP4_LAYOUTS["fragmented" if fragmented else "standard"]
        try:
            self._container = av.open(str(self._partial_path), "w", format="mp4", options={"movflags": movflags})
        except (av.FFmpegError, OSError) as error:
            raise UserError(
                f"cannot write video file '{self._partial_path}' ({error.strerror}): choose another path"
            ) from error
        try:
            self._video = self._container.add_stream(
                "libx264", rate=self.fps, options={**X264_OPTIONS, "crf": str(crf)}
            )
            self._video.width, self._video.height, self._video.pix_fmt = width, height, "yuv420p"
            self._audio = None
            if audio_sample_rate is not None:
                self._audio = self._container.add_stream(
                    "aac", rate=audio_sample_rate, layout=_LAYOUTS[audio_channels]
                )
                self._audio.codec_context.bit_rate = AUDIO_BITRATE
            # Opens the encoders now, so the AAC frame size is known and settings errors surface here.
            self._container.start_encoding()
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write_frame(self, frame: np.ndarray) -> None:
        """Encode one uint8 RGB frame of shape (height, width, 3)."""
        self._check_open()
        if frame.dtype != np.uint8 or frame.shape != (self.height, self.width, 3):
            raise ValueError(
                f"frame must be uint8 of shape ({self.height}, {self.width}, 3), "
                f"got {frame.dtype} {frame.shape}"
            )
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.frames_written  # in units of 1 / fps
        self._container.mux(self._video.encode(video_frame))
        self.frames_written += 1
        self._encode_audio(up_to=self._video_samples())

    def write_audio(self, samples: np.ndarray) -> None:
        """Append float32 samples of shape (channels, n) at ``audio_sample_rate``; any chunk size."""
        self._check_open()
        if self._audio is None:
            raise ValueError("this VideoWriter was made without audio (audio_sample_rate=None)")
        if samples.ndim != 2 or samples.shape[0] != self.audio_channels:
            raise ValueError(f"samples must have shape ({self.audio_channels}, n), got {samples.shape}")
        if samples.shape[1] == 0:
            return
        self._fifo.write(self._audio_frame(np.ascontiguousarray(samples, dtype=np.float32)))
        self._encode_audio(up_to=self._video_samples())

    def close(self) -> Path:
        """Finish the file: flush the encoders, fit the audio to the video, rename onto ``path``."""
        self._check_open()
        if self.frames_written == 0:
            self.abort()
            raise ValueError("no frames were written: a video needs at least one frame")
        try:
            self._container.mux(self._video.encode(None))
            if self._audio is not None:
                self._finish_audio()
            self._container.close()
        except BaseException:
            self.abort()
            raise
        self._finished = True
        os.replace(self._partial_path, self.path)
        return self.path

    def abort(self) -> None:
        """Stop writing and delete the temporary file; nothing is written at ``path``."""
        if self._finished:
            return
        self._finished = True
        container = getattr(self, "_container", None)
        if container is not None:
            # The file is being thrown away: an error while finishing it does not matter.
            with contextlib.suppress(av.FFmpegError, OSError):
                container.close()
        self._partial_path.unlink(missing_ok=True)

    # -- audio --------------------------------------------------------------------------------------

    def _video_samples(self) -> int:
        """Audio samples that the frames written so far cover."""
        return round(self.frames_written * self.audio_sample_rate / self.fps) if self._audio else 0

    def _encode_audio(self, up_to: int) -> None:
        """Encode whole AAC frames from the FIFO while they stay within the first ``up_to`` samples.

        Holding back audio past the video's end is what lets ``close()`` trim it to the video's duration.
        """
        if self._audio is None:
            return
        frame_size = self._audio.codec_context.frame_size
        while self._fifo.samples >= frame_size and self._audio_encoded + frame_size <= up_to:
            self._encode_audio_frame(self._fifo.read(frame_size))

    def _finish_audio(self) -> None:
        target = self._video_samples()
        missing = target - self._audio_encoded - self._fifo.samples
        if missing > 0:
            self._fifo.write(self._audio_frame(np.zeros((self.audio_channels, missing), np.float32)))
        self._encode_audio(up_to=target)
        remainder = target - self._audio_encoded
        if remainder > 0:  # a short last frame: the AAC encoder accepts one
            self._encode_audio_frame(self._fifo.read(remainder))
        self._container.mux(self._audio.encode(None))

    def _encode_audio_frame(self, frame: av.AudioFrame) -> None:
        frame.pts = self._audio_encoded
        frame.time_base = Fraction(1, self.audio_sample_rate)
        self._container.mux(self._audio.encode(frame))
        self._audio_encoded += frame.samples

    def _audio_frame(self, samples: np.ndarray) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=_LAYOUTS[self.audio_channels])
        frame.sample_rate = self.audio_sample_rate
        return frame

    def _check_open(self) -> None:
        if self._finished:
            raise RuntimeError("this VideoWriter is closed")


def _validate_settings(
    fps: float, width: int, height: int, audio_sample_rate: int | None, audio_channels: int, crf: int
) -> None:
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"width and height must be positive and even (H.264 yuv420p), got {width}x{height}")
    if audio_sample_rate is not None and audio_sample_rate <= 0:
        raise ValueError(f"audio_sample_rate must be positive or None, got {audio_sample_rate}")
    if audio_channels not in _LAYOUTS:
        raise ValueError(f"audio_channels must be 1 or 2, got {audio_channels}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")

