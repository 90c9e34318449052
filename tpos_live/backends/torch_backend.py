"""The torch backends: eager (the stack as loaded), compiled (``torch.compile``), and bfloat16.

``torch-bf16`` is the CPU fast path: on CPUs with AMX or AVX512-BF16 (Sapphire Rapids and later),
oneDNN runs bfloat16 convolutions and matmuls several times faster than float32. The weights are
cast (not autocast: autocast would convert every weight on every call), and the UNet's and
decoder's weights go to ``channels_last``, the layout oneDNN's convolutions prefer.

``torch-cuda-graphs`` is the GPU fast path without TensorRT: float16 (or bfloat16) weights in
``channels_last``, each network captured as a CUDA graph once per batch size and replayed per frame
(:mod:`tpos_live.backends.cuda_graphs`). Not verified on a GPU here: no GPU was available.

``torch-compiled`` compiles both networks with inductor and weight freezing (weights become
constants: convolutions and linears get prepacked oneDNN weights and fused epilogues); on the CPU
it also uses ``channels_last``. Measured on the 2-core development CPU (SD 1.5 UNet, 256x256, bf16,
batch 1): 0.33 s eager, 0.19 s compiled.

On the CPU both keep freed memory in the process heap (:func:`keep_freed_memory`): by default glibc
returns every large activation buffer to the kernel and page-faults it back on the next call
(~80k faults, ~15% of a 256x256 UNet call).
"""

from __future__ import annotations

import ctypes
import sys

import torch
from torch import nn

from tpos_live.backends.cuda_graphs import GraphedNetwork, GraphRuntime
from tpos_live.backends.network_specs import DecodeModule, UNetModule
from tpos_live.diffusion.stack import ModelStack
from tpos_live.errors import UserError


class TorchBackend:
    """The stack's own torch modules behind the :class:`~tpos_live.backends.base.Backend` protocol.

    Args:
        stack: the model stack; with ``dtype`` or ``channels_last`` its UNet and decoder are converted
            in place (no second copy of the weights; the rest of the stack keeps working with them).
        decoder: ``"taesd"`` or ``"vae"``, what :meth:`decode` runs.
        name: the registry name (for messages).
        dtype: run the UNet and decoder in this dtype (None: as loaded).
        channels_last: store conv weights and feed activations in NHWC.
        compile: wrap both networks in ``torch.compile`` with weight freezing (compiled on the first
            call of each shape: minutes for a full-size UNet on a small CPU, cached on disk after).
        keep_memory: call :func:`keep_freed_memory` (CPU only; process-wide).
        graphs: run both networks as graphs captured once per input shape with this runtime
            (:class:`~tpos_live.backends.cuda_graphs.CudaGraphRuntime` on a GPU; None: eager calls).
    """

    def __init__(self, stack: ModelStack, decoder: str = "taesd", *, name: str = "torch",
                 dtype: torch.dtype | None = None, channels_last: bool = False,
                 compile: bool = False, keep_memory: bool = False, graphs: GraphRuntime | None = None) -> None:
        if decoder not in ("taesd", "vae"):
            raise ValueError(f"decoder must be 'taesd' or 'vae', got {decoder!r}")
        autoencoder = stack.taesd if decoder == "taesd" else stack.vae
        if autoencoder is None:
            raise UserError(f"the {decoder} decoder was asked for but the model {stack.name} has none")
        self.name = name
        self.decoder = decoder
        self.channels_last = channels_last
        self.compiled = compile
        self.memory_kept = keep_memory and stack.device.type == "cpu" and keep_freed_memory()
        for module in (stack.unet, autoencoder):
            _convert(module, dtype, channels_last)
        self.dtype = stack.unet.dtype
        self.decoder_dtype = autoencoder.dtype
        self.device = stack.unet.device
        self._unet: nn.Module = UNetModule(stack.unet).eval()
        self._decode: nn.Module = DecodeModule(autoencoder).eval()
        if compile:
            options = {"freezing": True}
            self._unet = torch.compile(self._unet, dynamic=False, options=options)
            self._decode = torch.compile(self._decode, dynamic=False, options=options)
        self.graphs = graphs
        if graphs is not None:
            self._unet = GraphedNetwork(self._unet, graphs)
            self._decode = GraphedNetwork(self._decode, graphs)

    def unet(self, sample: torch.Tensor, timestep: torch.Tensor,
             encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        sample = self._layout(sample.to(self.device, self.dtype))
        conditions = encoder_hidden_states.to(self.device, self.dtype)
        return self._unet(sample, timestep.to(self.device), conditions).contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        latents = self._layout(latents.to(self.device, self.decoder_dtype))
        return self._decode(latents).contiguous()

    def describe(self) -> str:
        options = (("channels_last", self.channels_last), ("torch.compile", self.compiled),
                   ("CUDA graphs per batch size", self.graphs is not None), ("freed memory kept", self.memory_kept))
        extras = [option for option, on in options if on]
        dtype = str(self.dtype).removeprefix("torch.")
        return f"{self.name} ({dtype} on {self.device}{''.join(', ' + e for e in extras)})"

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _convert(module: nn.Module, dtype: torch.dtype | None, channels_last: bool) -> None:
    if dtype is not None and module.dtype != dtype:
        module.to(dtype)
    if channels_last:
        module.to(memory_format=torch.channels_last)


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the kernel (process-wide).

    Buffers up to 32 MiB come from the heap instead of fresh mmaps, and the heap is not trimmed, so
    a network's activations reuse the same pages call after call. False where there is no glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # from <malloc.h>
    settings = ((m_mmap_threshold, 32 * 2**20), (m_trim_threshold, 2**31 - 1), (m_top_pad, 256 * 2**20))
    return all(libc.mallopt(option, value) == 1 for option, value in settings)


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN sees AMX or AVX512-BF16 on this CPU (bfloat16 faster than float32)."""
    flags = _cpu_flags()
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
