"""CUDA streams for the live stages that share one GPU (nothing happens on the CPU).

The renderer runs on a high-priority stream, the scene preparer and the encoder on streams of their
own at normal priority, so a scene being prepared or a hop being encoded never queues in front of
a frame. Work crosses from one stream to another through events: the producing stage waits on an
event recorded after its work (only its own thread waits) before it publishes, and the consuming
stream marks the tensors it adopts as in use (``record_stream``) so that the caching allocator does
not hand their memory to the producer's stream while the consumer's kernels may still read it.

Not verified on a GPU here (no GPU was available); on the CPU every function is a no-op.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch

RENDER_PRIORITY = -1  # CUDA: lower numbers are higher priorities (-1 is the highest on most GPUs)
BACKGROUND_PRIORITY = 0


@contextlib.contextmanager
def stage_stream(device: torch.device, priority: int = BACKGROUND_PRIORITY) -> Iterator[object | None]:
    """Run the body on a new CUDA stream of ``priority`` on ``device`` (yields it; None on the CPU)."""
    if torch.device(device).type != "cuda":
        yield None
        return
    stream = torch.cuda.Stream(torch.device(device), priority=priority)
    with torch.cuda.stream(stream):
        yield stream


def finish_work(device: torch.device) -> None:
    """Wait (this thread only) until the work queued so far on the current stream of ``device`` is done."""
    if torch.device(device).type != "cuda":
        return
    event = torch.cuda.Event()
    event.record()
    event.synchronize()


def adopt(value: object, stream: object | None) -> None:
    """Mark every tensor in ``value`` (a tensor, a tuple of them, or a dataclass holding them) as used
    on ``stream``: its memory is not reused before the work queued there now is done."""
    if stream is None:
        return
    if isinstance(value, torch.Tensor):
        if value.is_cuda:
            value.record_stream(stream)
    elif isinstance(value, tuple | list):
        for item in value:
            adopt(item, stream)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            adopt(getattr(value, field.name), stream)
