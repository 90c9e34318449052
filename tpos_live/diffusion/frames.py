"""From decoded images on the compute device to uint8 RGB frames on the host, without waste.

    download = FrameDownload(device)
    pending = download.start(images, latents)   # (B, 3, H, W) in [-1, 1]; returns at once on a GPU
    ...                                         # render the next frame meanwhile
    frames, finite = pending.result()           # (B, H, W, 3) uint8, C-contiguous; False: NaN/Inf

A backend that gives a completion fence (``diffusion/backend.py``: :func:`completion_fence`) passes it
to :meth:`FrameDownload.start`; :meth:`PendingFrames.result` waits on it before it converts (CPU) or
hands out (CUDA) the frames. Without one (every real backend here) nothing changes.

On the device the images become uint8 and channels-last in buffers kept from frame to frame (one
contiguous copy, no per-frame allocation at a fixed batch), and the NaN/Inf check of the latents
becomes one flag that rides along with the frames: there is no extra synchronisation for it. On
CUDA the frames and the flag go into page-locked host buffers with non-blocking copies on a stream
of the download's own, which waits on the render stream; :meth:`PendingFrames.result` waits on the
copy's event (without the GIL). Three slots take turns, so one batch can download while the next
renders (a caller keeps at most two results unread). On the CPU the arithmetic runs on reused
float planes when the result is asked for, on the thread that asks, and the planes are interleaved
straight into the caller's uint8 array.

The frames handed out are the caller's own arrays (copied out of the slot), so a consumer may keep
them as long as it likes. The uint8 values are exactly ``round((clamp(x, -1, 1) + 1) * 127.5)``.
The CUDA path is not verified here (no GPU was available).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from tpos_live.diffusion.backend import Fence


class PendingFrames:
    """A batch being downloaded; :meth:`result` waits for it (on the CPU: converts it then, so that the
    thread that calls it, not the one that rendered, does the work)."""

    def __init__(self, host: torch.Tensor, flag: torch.Tensor, event: torch.cuda.Event | None,
                 convert=None, fence: Fence | None = None) -> None:
        self._host, self._flag, self._event, self._convert = host, flag, event, convert
        self._fence = fence

    def result(self) -> tuple[np.ndarray, bool]:
        """``(frames, finite)``: (B, H, W, 3) uint8 frames the caller owns, and whether the latents
        behind them were all finite. Waits on the backend's fence first, when it gave one."""
        if self._fence is not None:
            self._fence.synchronize()
        if self._convert is not None:  # the CPU: straight into an array of the caller's own
            return self._convert(), bool(self._flag.item())
        if self._event is not None:
            self._event.synchronize()
        return self._host.numpy().copy(), bool(self._flag.item())


class FrameDownload:
    """Reused buffers for turning decoded images into host frames (see the module docstring)."""

    slots = 3  # one being copied out, one waiting for it, one starting while the next batch renders

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if self.cuda else None
        self._buffers: dict[tuple, list] = {}
        self._turn = 0

    def start(self, images: torch.Tensor, latents: torch.Tensor | None = None,
              fence: Fence | None = None) -> PendingFrames:
        """Convert ``images`` (B, 3, H, W) and start their download; ``latents``: what to check for NaN/Inf;
        ``fence``: the backend's completion fence for the work behind ``images`` (None: no wait of its own)."""
        batch, _, height, width = images.shape
        slot = self._slot((batch, height, width))
        work, frames, host, flag, host_flag, event = slot
        if not self.cuda:
            return PendingFrames(frames, flag, None, lambda: self._convert_on_host(images, latents, work, flag),
                                 fence)
        stream = self._stream
        stream.wait_stream(torch.cuda.current_stream(self.device))  # the render's work is queued before
        with torch.cuda.stream(stream):
            images.record_stream(stream)  # the allocator must not reuse them before the copy is done
            if latents is not None:
                latents.record_stream(stream)
            self._convert(images, latents, work, frames, flag)
            host.copy_(frames, non_blocking=True)
            host_flag.copy_(flag, non_blocking=True)
            event.record(stream)
        return PendingFrames(host, host_flag, event, fence=fence)

    def _convert(self, images: torch.Tensor, latents: torch.Tensor | None, work: torch.Tensor,
                 frames: torch.Tensor, flag: torch.Tensor) -> None:
        """On the device: into channels-last ``work``, then the uint8 ``frames`` (one strided pass)."""
        channels_last = images.permute(0, 2, 3, 1)
        if images.dtype == torch.float32:
            torch.clamp(channels_last, -1.0, 1.0, out=work)  # contiguous, one pass
        else:  # float16 / bfloat16 decoders: to float32 first (clamping in their dtype is the same)
            work.copy_(channels_last).clamp_(-1.0, 1.0)
        work.add_(1.0).mul_(127.5).round_()
        frames.copy_(work)  # exact: integers in 0..255
        _check_finite(latents, flag)

    @staticmethod
    def _convert_on_host(images: torch.Tensor, latents: torch.Tensor | None, work: torch.Tensor,
                         flag: torch.Tensor) -> np.ndarray:
        """On the CPU, in numpy: the arithmetic on contiguous planes (``work`` is (B, 3, H, W)), then one
        channel at a time into interleaved uint8. Torch's ops here run on its thread pool, which the other
        stages' ops keep busy, and its strided permute-copy is slow: on the 2-core development CPU a 512 x 512
        frame took 1.8 ms alone and three times that during a show; this takes 0.8 ms on one core."""
        planes = work.numpy()
        if images.dtype == torch.float32:
            np.clip(images.numpy(), -1.0, 1.0, out=planes)
        else:  # float16 / bfloat16 decoders: to float32 first (clamping in their dtype is the same)
            work.copy_(images)
            np.clip(planes, -1.0, 1.0, out=planes)
        np.add(planes, 1.0, out=planes)
        np.multiply(planes, 127.5, out=planes)
        np.rint(planes, out=planes)  # half to even, as torch.round
        batch, _, height, width = work.shape
        frames = np.empty((batch, height, width, 3), dtype=np.uint8)
        for channel in range(3):
            frames[..., channel] = planes[:, channel]  # exact: integers in 0..255
        _check_finite(latents, flag)
        return frames

    def _slot(self, shape: tuple) -> list:
        slots = self._buffers.get(shape)
        if slots is None:
            self._buffers.clear()  # a new batch or size: the old buffers go
            slots = self._buffers[shape] = [self._allocate(shape) for _ in range(self.slots)]
        self._turn = (self._turn + 1) % self.slots
        return slots[self._turn]

    def _allocate(self, shape: tuple) -> list:
        device, pin = self.device, self.cuda
        batch, height, width = shape
        work_shape = (batch, height, width, 3) if self.cuda else (batch, 3, height, width)
        work = torch.empty(work_shape, dtype=torch.float32, device=device)
        frames = torch.empty((batch, height, width, 3), dtype=torch.uint8, device=device)
        flag = torch.empty((), dtype=torch.bool, device=device)
        host = torch.empty((batch, height, width, 3), dtype=torch.uint8, pin_memory=pin) if pin else frames
        host_flag = torch.empty((), dtype=torch.bool, pin_memory=pin) if pin else flag
        event = torch.cuda.Event() if pin else None
        return [work, frames, host, flag, host_flag, event]


def _check_finite(latents: torch.Tensor | None, flag: torch.Tensor) -> None:
    if latents is None:
        flag.fill_(True)
    else:
        torch.all(torch.isfinite(latents), out=flag)
