"""What is fused into or attached to a loaded stack: a LoRA, a TAESD decoder."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from diffusers import AutoencoderTiny, DDIMScheduler

from tpos_live.diffusion.folders import LOAD_ERRORS, TAESD_FILES, load_component
from tpos_live.diffusion.hub import REPO_ID, hub_snapshot
from tpos_live.diffusion.single_file import import_pipeline, refuse_pickle
from tpos_live.diffusion.stack import ModelStack
from tpos_live.errors import UserError, first_line


def fuse_lora(stack: ModelStack, lora: str, scale: float, progress: bool) -> None:
    """Fuse a LoRA into the UNet (and text encoder) weights; afterwards they are plain modules."""
    StableDiffusionPipeline = import_pipeline()
    weights = _resolve_lora(lora, progress)
    unused_scheduler = DDIMScheduler(steps_offset=1, clip_sample=False)  # the pipeline only carries the LoRA
    pipe = StableDiffusionPipeline(
        vae=stack.vae,
        text_encoder=stack.text_encoder,
        tokenizer=stack.tokenizer,
        unet=stack.unet,
        scheduler=unused_scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # diffusers logs "No LoRA keys associated to CLIPTextModel" for every UNet-only LoRA (LCM's among
    # them) and logs a failure before raising it; we check and report both ourselves.
    quiet = _DropLogRecords("No LoRA keys associated to", "Loading fused was unsuccessful")
    try:
        with quiet.on(logging.getLogger("diffusers")):
            pipe.load_lora_weights(str(weights.parent), weight_name=weights.name, adapter_name="fused")
    except LOAD_ERRORS as error:
        raise UserError(
            f"LoRA '{lora}' does not fit '{stack.name}' ({first_line(error)}): "
            "give a LoRA trained for this base model"
        ) from error
    if not any(pipe.get_list_adapters().values()):
        raise UserError(
            f"LoRA '{lora}' has no weights for the UNet or text encoder of '{stack.name}': "
            "give a LoRA trained for this base model"
        )
    pipe.fuse_lora(lora_scale=scale, adapter_names=["fused"])
    pipe.unload_lora_weights()
    stack.name += f" + {short_name(lora)}"


def _resolve_lora(lora: str, progress: bool) -> Path:
    """The weights file of a LoRA named by a .safetensors file, a folder holding one, or a hub id."""
    path = Path(lora).expanduser()
    if not path.exists():
        if not REPO_ID.match(lora):
            raise UserError(f"LoRA '{lora}' does not exist: give a .safetensors file, a folder or a hub id")
        path = hub_snapshot(lora, ("*.safetensors",), "LoRA", "pass a local file with --lora", progress)
    if path.is_file():
        refuse_pickle(path, "LoRA")
        return path
    files = sorted(path.glob("*.safetensors"))
    preferred = [file for file in files if file.name == "pytorch_lora_weights.safetensors"]
    if preferred or len(files) == 1:
        return (preferred or files)[0]
    found = "none" if not files else ", ".join(file.name for file in files)
    raise UserError(f"LoRA folder '{lora}' must hold one .safetensors file (found: {found}): give the file")


def attach_taesd(stack: ModelStack, taesd: str | None, source: Path, progress: bool) -> None:
    if taesd is not None and taesd.lower() == "none":
        return
    if taesd is None:
        if not (source.is_dir() and (source / "taesd").is_dir()):
            return
        folder, label = source / "taesd", "taesd"
    else:
        folder, label = _resolve_taesd(taesd, progress), short_name(taesd)
    stack.taesd = load_component(AutoencoderTiny, folder)
    config = stack.taesd.config
    taesd_scale = config.upsampling_scaling_factor ** (len(config.decoder_block_out_channels) - 1)
    if (config.latent_channels, taesd_scale) != (stack.latent_channels, stack.vae_scale_factor):
        raise UserError(
            f"TAESD '{taesd or folder}' decodes {config.latent_channels}-channel latents at scale "
            f"{taesd_scale} but '{stack.name}' makes {stack.latent_channels}-channel ones at scale "
            f"{stack.vae_scale_factor}: give the TAESD of this model, or --taesd none"
        )
    stack.name += f" + {label}"


def _resolve_taesd(taesd: str, progress: bool) -> Path:
    path = Path(taesd).expanduser()
    if path.is_dir():
        return path
    if path.exists() or not REPO_ID.match(taesd):  # a file, or a path that does not exist
        raise UserError(f"TAESD '{taesd}' is not a folder or hub id: give an AutoencoderTiny folder, or none")
    hint = "pass a local folder with --taesd, or --taesd none"
    return hub_snapshot(taesd, TAESD_FILES, "TAESD", hint, progress)


class _DropLogRecords(logging.Filter):
    """Keeps log records that start with given texts from reaching a logger's handlers."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)

    @contextlib.contextmanager
    def on(self, logger: logging.Logger) -> Iterator[None]:
        # On the handlers, not the logger: a logger's filters skip records its children propagate.
        handlers = list(logger.handlers)
        for handler in handlers:
            handler.addFilter(self)
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(self)


def short_name(name: str) -> str:
    return Path(name.rstrip("/")).stem or name
