"""The protocol every inference backend follows, so that the renderer cannot tell which one runs.

The renderer makes two kinds of network call (``TPoSRenderer.unet`` and ``TPoSRenderer.decode``);
a :class:`Backend` answers both with what the torch modules would return: the UNet's ``.sample``
and the decoder's ``.sample``, as new tensors on the device the inputs came from. A backend takes
the renderer's inputs as they are (float32 latents, integer timesteps, conditions in any float
dtype) and casts them to what its networks want.

A backend whose work the host cannot see finish through the download's own CUDA event may also
give a completion fence (:class:`Fence`, through :func:`completion_fence`): the frame download waits
on it before it hands out frames.

ONNX Runtime and TensorRT run networks by tensor name; :class:`RunnerBackend` adapts two such
:class:`NetworkRunner` objects (UNet, decoder) to the protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import torch

from tpos_live.backends.specs import NetworkSpec


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


class NetworkRunner(Protocol):
    """A network run by tensor name (an ONNX Runtime session, a TensorRT engine)."""

    spec: NetworkSpec
    precision: str  # of the float tensors without a dtype of their own
    device: torch.device
    batch_range: tuple[int, int]  # the batch sizes (dimension 0 of every input) it can run

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named inputs (already of the spec's dtypes, on ``device``) -> new named output tensors."""
        ...


def cast_inputs(spec: NetworkSpec, precision: str, device: torch.device,
                inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The spec's dtypes on ``device``, contiguous (runtimes read raw buffers)."""
    return {
        t.name: inputs[t.name].to(device, t.torch_dtype(precision)).contiguous() for t in spec.inputs
    }


def run_in_batches(runner: NetworkRunner, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run ``inputs`` in batches the runner takes: larger batches in chunks, smaller ones padded with
    copies of their last item (a static-shape engine runs one batch size only)."""
    low, high = runner.batch_range
    total = next(iter(inputs.values())).shape[0]
    if low <= total <= high:
        return runner.run(inputs)
    pieces = []
    for start in range(0, total, high):
        size = min(high, total - start)
        chunk = {name: x[start:start + size] for name, x in inputs.items()}
        if size < low:
            chunk = {name: _padded(x, low) for name, x in chunk.items()}
        pieces.append({name: out[:size] for name, out in runner.run(chunk).items()})
    return {name: torch.cat([piece[name] for piece in pieces]) for name in pieces[0]}


def _padded(x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([x, x[-1:].expand(batch - x.shape[0], *x.shape[1:])])


class RunnerBackend:
    """A :class:`Backend` over two named-tensor runners (UNet and TAESD decoder).

    Outputs go back to the device the inputs came from, so a CPU-side renderer can drive a GPU
    runtime and a GPU-side renderer pays no copy.
    """

    decoder = "taesd"

    def __init__(self, name: str, unet: NetworkRunner, decoder: NetworkRunner, details: str = "") -> None:
        self.name = name
        self.unet_runner = unet
        self.decoder_runner = decoder
        self.details = details

    def unet(self, sample: torch.Tensor, timestep: torch.Tensor,
             encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        runner = self.unet_runner
        if timestep.ndim == 0:  # diffusers accepts one timestep for the whole batch
            timestep = timestep.expand(sample.shape[0])
        inputs = cast_inputs(runner.spec, runner.precision, runner.device, {
            "sample": sample, "timestep": timestep, "encoder_hidden_states": encoder_hidden_states,
        })
        return run_in_batches(runner, inputs)["noise_pred"].to(sample.device)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        runner = self.decoder_runner
        inputs = cast_inputs(runner.spec, runner.precision, runner.device, {"latents": latents})
        return run_in_batches(runner, inputs)["image"].to(latents.device)

    def describe(self) -> str:
        runner = self.unet_runner
        details = f", {self.details}" if self.details else ""
        return f"{self.name} ({runner.precision} on {runner.device}{details})"
