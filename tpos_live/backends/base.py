"""The inference backends' shared parts: the renderer's :class:`Backend` protocol (its home is
``tpos_live.diffusion.backend``, beside the renderer that calls it), and the runners of ONNX Runtime and
TensorRT.

ONNX Runtime and TensorRT run networks by tensor name; :class:`RunnerBackend` adapts two such
:class:`NetworkRunner` objects (UNet, decoder) to the protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch

from tpos_live.backends.network_specs import NetworkSpec
from tpos_live.diffusion.backend import Backend, Fence, completion_fence

__all__ = ["Backend", "Fence", "NetworkRunner", "RunnerBackend", "cast_inputs", "completion_fence",
           "run_in_batches"]


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
