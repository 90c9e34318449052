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
renders (a caller keeps at most two results unread). On the CPU the same steps run on reused
buffers (no pinned memory) when the result is asked for, on the thread that asks.

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
            def convert() -> np.ndarray:
                out = torch.empty_like(frames)
                self._convert(images, latents, work, out, flag)
                return out.numpy()
            return PendingFrames(frames, flag, None, convert, fence)
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
        channels_last = images.permute(0, 2, 3, 1)
        if images.dtype == torch.float32:
            torch.clamp(channels_last, -1.0, 1.0, out=work)  # contiguous, one pass
        else:  # float16 / bfloat16 decoders: to float32 first (clamping in their dtype is the same)
            work.copy_(channels_last).clamp_(-1.0, 1.0)
        work.add_(1.0).mul_(127.5).round_()
        frames.copy_(work)  # exact: integers in 0..255
        if latents is None:
            flag.fill_(True)
        else:
            torch.all(torch.isfinite(latents), out=flag)

    def _slot(self, shape: tuple) -> list:
        slots = self._buffers.get(shape)
        if slots is None:
            self._buffers.clear()  # a new batch or size: the old buffers go
            slots = self._buffers[shape] = [self._allocate(shape) for _ in range(self.slots)]
        self._turn = (self._turn + 1) % self.slots
        return slots[self._turn]

    def _allocate(self, shape: tuple) -> list:
        device, pin = self.device, self.cuda
        work = torch.empty((*shape, 3), dtype=torch.float32, device=device)
        frames = torch.empty((*shape, 3), dtype=torch.uint8, device=device)
        flag = torch.empty((), dtype=torch.bool, device=device)
        host = torch.empty((*shape, 3), dtype=torch.uint8, pin_memory=pin) if pin else frames
        host_flag = torch.empty((), dtype=torch.bool, pin_memory=pin) if pin else flag
        event = torch.cuda.Event() if pin else None
        return [work, frames, host, flag, host_flag, event]
