"""Load a Stable Diffusion model stack: UNet, text encoder, tokenizer, VAE, TAESD and scheduler config.

Sources, in the order ``load_stack`` tries them:

- an alias: ``sd15-lcm`` (SD 1.5 with the LCM LoRA fused and TAESD), ``sd-turbo``, ``tiny``;
- a local path: a diffusers folder, or a single-file ``.safetensors`` checkpoint in the original
  LDM layout (converted by diffusers, offline, with the configs of ``architectures``);
- a hub id (``owner/name``): taken from the Hugging Face cache, downloaded only when missing.

The ``tiny`` stack (random weights, toy sizes) is built once, saved to a cache folder and loaded
back through the same folder loader as any diffusers model, so tests exercise the real path.

Everything returned is in ``eval()`` mode; gradients are left to the caller (``torch.inference_mode``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from tpos_live.diffusion.adapters import attach_taesd, fuse_lora
from tpos_live.diffusion.folders import MODEL_FILES, load_diffusers_folder
from tpos_live.diffusion.hub import REPO_ID, hub_snapshot, progress_bars
from tpos_live.diffusion.models import ALIASES, MINI_ALIAS, TINY_ALIAS, ModelSpec, suggested_sampling
from tpos_live.diffusion.random_stacks import tiny_model_folder
from tpos_live.diffusion.single_file import load_single_file
from tpos_live.diffusion.stack import DTYPES, ModelStack
from tpos_live.errors import UserError, first_line
from tpos_live.paths import mini_model_folder
from tpos_live.runtime import resolve_device


def load_stack(spec: ModelSpec, progress: bool = True) -> ModelStack:
    """Load the model ``spec`` names, fuse its LoRA, attach TAESD, then move it to device and dtype.

    Raises UserError (one line: what is wrong and what to do) for missing or unusable models, and for a
    device or dtype this machine lacks ("auto" picks them).
    """
    device, dtype = resolve_device(spec.device, spec.dtype)
    alias = ALIASES.get(spec.model)
    if alias is not None:
        spec = replace(
            spec,
            model=alias.model,
            lora=alias.lora if spec.lora is None else spec.lora,
            taesd=alias.taesd if spec.taesd is None else spec.taesd,
        )
    with progress_bars(progress):
        source = model_source(spec.model, progress)
        if source.is_file():
            stack = load_single_file(source, progress)
        else:
            stack = load_diffusers_folder(source, label=spec.model)
        if spec.lora is not None:
            fuse_lora(stack, spec.lora, spec.lora_scale, progress)
        attach_taesd(stack, spec.taesd, source, progress)
    if alias is not None:
        stack.default_steps, stack.default_guidance = alias.sampling.steps, alias.sampling.guidance
    elif stack.default_steps < 1:  # the files record no sampling (a folder's metadata may hold other facts)
        sampling = suggested_sampling(stack, spec.lora)
        stack.default_steps, stack.default_guidance = sampling.steps, sampling.guidance
    return _place(stack, device, DTYPES[dtype])


def model_source(model: str, progress: bool = True) -> Path:
    """The local folder or file a model name loads from (an alias's base model; the tiny stack's cache
    folder; a hub id's cache snapshot, downloaded when missing and online). UserError when there is none."""
    alias = ALIASES.get(model)
    model = alias.model if alias is not None else model
    if model == TINY_ALIAS:
        return tiny_model_folder()
    if model == MINI_ALIAS:
        return _shipped_mini_folder()
    path = Path(model).expanduser()
    if path.exists():
        return path
    if REPO_ID.match(model) and not model.endswith((".safetensors", ".ckpt")):
        hint = "pass a local folder with --model, or try --model tiny"
        return hub_snapshot(model, MODEL_FILES, "model", hint, progress)
    names = ", ".join([*ALIASES, TINY_ALIAS, MINI_ALIAS])
    raise UserError(
        f"model '{model}' does not exist: give a diffusers folder, a .safetensors file, "
        f"a hub id (owner/name) or one of {names}"
    )


def _shipped_mini_folder() -> Path:
    folder = mini_model_folder()
    if not (folder / "model_index.json").is_file():
        raise UserError(f"the mini model is missing from this installation ('{folder}' holds no model): "
                        "reinstall tpos-live, or train it with scripts/train_mini_world.py and pass its folder")
    return folder


def _place(stack: ModelStack, device: str, dtype: torch.dtype) -> ModelStack:
    try:
        for module in stack.modules().values():
            # nn.Module.to, not diffusers' override: that one warns about float32-only submodules
            # on every cast, even for models that have none.
            torch.nn.Module.to(module, device=device, dtype=dtype).eval()
            _own_aligned_memory(module)
    except (RuntimeError, AssertionError) as error:  # torch raises AssertionError for missing CUDA
        raise UserError(
            f"cannot put the model on device '{device}' ({first_line(error)}): choose another device"
        ) from error
    return stack


# torch's CPU allocator aligns to 64 bytes; the kernels' vectorised paths assume no less.
_ALIGNMENT = 64


def _own_aligned_memory(module: torch.nn.Module) -> None:
    """Copy tensors that still point into a memory-mapped safetensors file into memory of their own.

    Loaded weights keep the file's layout: page-mapped storage at offsets the header decides, rarely
    64-byte aligned. Kernels then pick other code paths (a model loaded from a file computed
    differently from the same weights built in memory), and every first touch is a page fault.
    """
    for tensors in (module.parameters(), module.buffers()):
        for tensor in tensors:
            if tensor.device.type == "cpu" and tensor.data_ptr() % _ALIGNMENT:
                tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)
