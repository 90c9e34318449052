"""What the renderer calls to run its networks: the :class:`Backend` protocol, so that it cannot tell
which runtime runs them (the runtimes are ``tpos_live.backends``, which builds them for a model stack).

The renderer makes two kinds of network call (``TPoSRenderer.unet`` and ``TPoSRenderer.decode``);
a :class:`Backend` answers both with what the torch modules would return: the UNet's ``.sample``
and the decoder's ``.sample``, as new tensors on the device the inputs came from. A backend takes
the renderer's inputs as they are (float32 latents, integer timesteps, conditions in any float
dtype) and casts them to what its networks want.

A backend whose work the host cannot see finish through the download's own CUDA event may also
give a completion fence (:class:`Fence`, through :func:`completion_fence`): the frame download waits
on it before it hands out frames.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Backend(Protocol):
    """The UNet and the decoder of one model stack, on some runtime.

    Attributes:
        name: the registry name it was made under (``"torch"``, ``"onnxruntime"``, ...).
        decoder: which decoder :meth:`decode` runs, ``"taesd"`` or ``"vae"``.

    Optional: ``fence() -> Fence | None``, the completion of the work queued so far, for a backend
    whose calls return before their work is done in a way the download's CUDA event does not cover
    (see :func:`completion_fence`; no backend of this package needs one).
    """

    name: str
    decoder: str

    def unet(self, sample: torch.Tensor, timestep: torch.Tensor,
             encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        """``UNet2DConditionModel(sample, timestep, encoder_hidden_states).sample``: (B, C, h, w)."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``decoder.decode(latents).sample`` for already scaled latents: (B, 3, H, W) in [-1, 1]."""
        ...

    def describe(self) -> str:
        """One line for logs and benchmarks: runtime, precision, device, shapes."""
        ...


class Fence(Protocol):
    """The completion of the work a backend had queued when the fence was taken.

    :meth:`synchronize` blocks the calling thread until that work is done, without holding the GIL
    (as ``torch.cuda.Event.synchronize`` does: a recorded ``torch.cuda.Event`` is a Fence).
    """

    def synchronize(self) -> None:
        ...


def completion_fence(backend: Backend | None) -> Fence | None:
    """A fence for the work ``backend`` has queued so far, or None when it gives none.

    A backend may define ``fence() -> Fence | None`` (optional: it is not part of :class:`Backend`,
    so wrappers and existing backends need nothing). None of this package's backends do, and none
    needs to: the torch and CUDA-graph backends queue their work on the caller's CUDA stream, ONNX
    Runtime's run returns when its work is done, and the TensorRT backend, which runs on a stream of
    its own, makes the caller's stream wait on that stream before it returns (so it needs no fence
    either); the download's own CUDA event, recorded after the render stream's work, therefore
    covers them all, and on the CPU every call is synchronous. (Not verified on a GPU here.)
    A fence is for a backend whose completion only the host can see (the orchestration benchmark's
    virtual GPU, a remote or host-timed runtime). It is a host-side wait: on CUDA it cannot order the
    download's copy on the device, which stays the backend's job (as TensorRT's ``wait_stream``).
    """
    fence: Callable[[], Fence | None] | None = getattr(backend, "fence", None)
    return None if fence is None else fence()
