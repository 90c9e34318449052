"""Training on several processes (``torchrun --nproc-per-node N``) so that they compute what one process
computes on the same global batch.

The choices, and why:

- **The global batch is ``batch_size``.** Every process draws the same global batches (the samplers
  depend only on seed, epoch and step) and takes its contiguous share, ``batch_size / N`` clips; so the
  batch size must be a multiple of N. Class balance (``--balanced``) is a property of the global batch,
  which is the same as in one process.
- **InfoNCE sees the whole global batch.** Its negatives are the rest of the batch, so each process
  gathers the encoder outputs of all processes (``torch.distributed.nn.functional.all_gather``, whose
  backward returns every process's gradient to the rows it owns) and computes the loss over the global
  batch. MAP's MSE is a mean over clips, so each process takes the mean over its share, and
  DistributedDataParallel's gradient average makes it the global mean.
- **BatchNorm uses the global batch's statistics** (:class:`GlobalBatchNorm2d`): per-process statistics
  would make the forward pass depend on N. torch's SyncBatchNorm does this on GPUs only; this one works
  on any device, so the CPU (gloo) test checks the code a GPU run uses.
- **Random draws are global too.** SpecAugment's masks and MAP's dropout masks are drawn for the whole
  global batch from generators that every process seeds alike, and each process keeps its rows
  (:class:`GlobalBatchDropout`); so the masks do not depend on N either.
- **Rank 0 writes** checkpoints, the training state and metrics; the others wait at a barrier. The state
  holds the global step and no per-process data, so a run resumes with any number of processes.
- **Collectives:** gloo on CPUs, nccl on GPUs (each process on the GPU of its ``LOCAL_RANK``). Waits that
  can be long (the spectrogram cache built by rank 0, checkpoints written) go through a gloo group of its
  own with a long timeout, so they do not trip nccl's watchdog.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from tpos_live.errors import UserError

# Long waits (building the spectrogram cache, writing a checkpoint) must not time a run out.
COORDINATION_TIMEOUT = datetime.timedelta(hours=24)
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Processes:
    """Where this process stands in a run: its rank among ``world_size`` processes.

    The default is one process alone (no process group); :func:`join_from_environment` makes the others.
    """

    rank: int = 0
    world_size: int = 1
    coordination: Any = field(default=None, compare=False, repr=False)  # gloo group for long waits

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {self.rank} of {self.world_size}")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def share(self, batch: Sequence[int]) -> list[int]:
        """This process's contiguous part of a global batch (which must divide evenly)."""
        if len(batch) % self.world_size:
            raise ValueError(f"a batch of {len(batch)} does not split evenly over {self.world_size} processes")
        size = len(batch) // self.world_size
        return list(batch[self.rank * size : (self.rank + 1) * size])

    def rows(self, local_rows: int) -> slice:
        """Where this process's ``local_rows`` rows lie in the global batch."""
        return slice(self.rank * local_rows, (self.rank + 1) * local_rows)

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """The global batch of ``tensor`` (rows of every process, in rank order), differentiable: the
        gradient of each row goes back to the process that owns it."""
        if not self.distributed:
            return tensor
        return _GatherRows.apply(tensor)

    def gather_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The global batch of an integer tensor (no gradient)."""
        if not self.distributed:
            return labels
        parts = [torch.empty_like(labels) for _ in range(self.world_size)]
        dist.all_gather(parts, labels.contiguous())
        return torch.cat(parts)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over all processes (no gradient)."""
        if not self.distributed:
            return tensor
        total = tensor.detach().clone()
        dist.all_reduce(total)
        return total

    def barrier(self) -> None:
        """Wait until every process gets here (no time limit to speak of)."""
        if self.distributed:
            dist.barrier(group=self.coordination)

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (say, building a cache or downloading a model), then the others."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def close(self) -> None:
        """Leave the process group (a no-op for one process)."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def join_from_environment(device: str) -> tuple[Processes, str]:
    """Join the run torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
    MASTER_PORT), or stay one process when it does not (or describes one process).

    ``device`` is a resolved device ("cpu", "cuda" or "cuda:N"). Under torchrun a GPU run puts each
    process on the GPU of its LOCAL_RANK, with nccl; a CPU run uses gloo. Returns the processes and the
    device this one trains on. Raises UserError for a device that does not fit the launch.
    """
    if not all(name in os.environ for name in TORCHRUN_VARIABLES):
        return Processes(), device
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world_size == 1:
        return Processes(), device
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = "gloo"
    if device.startswith("cuda"):
        if ":" in device:
            raise UserError(
                f"under torchrun every process trains on the GPU of its LOCAL_RANK: pass --device cuda "
                f"or auto, not {device}"
            )
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"torchrun started process {local_rank} on this machine but it has "
                f"{torch.cuda.device_count()} GPUs: start at most one process per GPU (--nproc-per-node)"
            )
        device, backend = f"cuda:{local_rank}", "nccl"
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    coordination = dist.new_group(backend="gloo", timeout=COORDINATION_TIMEOUT)
    return Processes(rank, world_size, coordination), device


# --- collectives with gradients ------------------------------------------------------------------------
# (torch.distributed.nn.functional does the same but is deprecated; these need only all_gather and
# all_reduce, which gloo and nccl both have.)


class _GatherRows(torch.autograd.Function):
    """All processes' rows, in rank order; backward: the sum over processes of the gradient of this
    process's rows (every process's loss depends on them)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rows, ctx.rank = tensor.shape[0], dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


class _SumOverProcesses(torch.autograd.Function):
    """The sum of a tensor over processes; backward: the sum of the gradients (all_reduce both ways)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.contiguous().clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.contiguous().clone()
        dist.all_reduce(total)
        return total


# --- modules that see the global batch -----------------------------------------------------------------


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics (and running averages) are those of the global batch.

    Mean and variance are summed over all processes (two passes, in float32, differentiable); every
    process's share must be the same size. In eval mode, or in one process, it is plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        if self.momentum is None:
            raise ValueError("GlobalBatchNorm2d needs a momentum (cumulative averaging is not implemented)")
        values = x.float()
        count = values.numel() // values.shape[1] * dist.get_world_size()
        mean = _SumOverProcesses.apply(values.sum(dim=(0, 2, 3))) / count
        centred = values - mean[None, :, None, None]
        variance = _SumOverProcesses.apply((centred * centred).sum(dim=(0, 2, 3))) / count
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(variance.detach() * count / (count - 1), self.momentum)
            self.num_batches_tracked.add_(1)
        normalised = centred * torch.rsqrt(variance + self.eps)[None, :, None, None]
        if self.affine:
            normalised = normalised * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return normalised.to(x.dtype)


def use_global_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a :class:`GlobalBatchNorm2d` holding the same
    parameters and buffers (state-dict names unchanged). Returns ``module``."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats,
                device=child.weight.device if child.affine else None,
            )
            replacement.load_state_dict(child.state_dict())
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            use_global_batch_norm(child)
    return module


class GlobalBatchDropout(nn.Module):
    """Dropout whose mask is drawn for the whole global batch from ``generator`` (one per process, all
    seeded alike), of which this process keeps its rows: the masks do not depend on the number of
    processes. Scales kept values by ``1 / (1 - p)`` like nn.Dropout."""

    def __init__(self, p: float, processes: Processes, generator: torch.Generator) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p must lie in [0, 1), got {p}")
        self.p = p
        self.processes = processes
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        rows = x.shape[0]
        shape = (rows * self.processes.world_size, *x.shape[1:])
        keep = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep[self.processes.rows(rows)] / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"

