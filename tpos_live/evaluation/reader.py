"""Stream a video's frames through PyAV, one at a time, with a progress bar: memory stays bounded by a
frame, whatever the video's length."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from tpos_live.errors import UserError


@dataclass(frozen=True)
class VideoInfo:
    """What the header of a video says (``frames`` is the header's count; 0 where it gives none)."""

    path: Path
    width: int
    height: int
    fps: float
    frames: int
    has_audio: bool


def video_info(path: str | Path) -> VideoInfo:
    """Read ``path``'s header. UserError (one line) for a missing file or one without a video stream."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"video '{path}' does not exist or is not a file: check the path")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UserError(f"'{path}' has no video stream: give a video file (mp4, mkv, webm, ...)")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            return VideoInfo(path, stream.codec_context.width, stream.codec_context.height, fps,
                             int(stream.frames or 0), bool(container.streams.audio))
    except av.FFmpegError as error:
        raise UserError(f"'{path}' is not a video FFmpeg can read ({error.strerror}): give a video file") from None


def iter_frames(info: VideoInfo, progress: bool = True, label: str | None = None) -> Iterator[np.ndarray]:
    """Every frame of ``info.path`` as uint8 RGB of shape (H, W, 3), decoded as it is needed."""
    from tqdm import tqdm

    try:
        with av.open(str(info.path)) as container, tqdm(
            total=info.frames or None, unit="frame", desc=label or info.path.name, disable=not progress,
            file=sys.stderr, dynamic_ncols=True, leave=False,
        ) as bar:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # FFmpeg decodes on its own threads
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
                bar.update(1)
    except av.FFmpegError as error:
        raise UserError(f"cannot decode '{info.path}' ({error.strerror}): give an uncorrupted video") from None


def small_grey(rgb: np.ndarray, side: int = 96) -> np.ndarray:
    """Luma (BT.601) in [0, 1], box-averaged down so that its longer side is at most about ``side``.

    The signal metrics need no detail finer than this, and the average keeps single-pixel codec noise
    from dominating the temporal differences."""
    grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0
    step = max(1, int(np.ceil(max(grey.shape) / side)))
    if step > 1:
        h, w = (grey.shape[0] // step) * step, (grey.shape[1] // step) * step
        grey = grey[:h, :w].reshape(h // step, step, w // step, step).mean(axis=(1, 3))
    return grey
