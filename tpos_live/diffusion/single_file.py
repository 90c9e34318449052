"""Single-file checkpoints in the original LDM layout, converted by diffusers offline with our configs."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tpos_live.diffusion.architectures import ARCHITECTURES, Architecture
from tpos_live.diffusion.folders import LOAD_ERRORS, check_fit, model_index, safetensors_shapes, write_json
from tpos_live.diffusion.hub import hub_snapshot
from tpos_live.diffusion.random_stacks import tiny_tokenizer
from tpos_live.diffusion.stack import ModelStack
from tpos_live.errors import UserError, first_line
from tpos_live.names import TINY_FAMILY

_LDM_UNET = "model.diffusion_model."
TOKENIZER_FILES = ("tokenizer/*",)


def refuse_pickle(path: Path, what: str) -> None:
    if path.suffix.lower() in {".ckpt", ".pt", ".pth", ".bin", ".pkl"}:
        raise UserError(
            f"{what} '{path}' is a pickled checkpoint, which can run code when loaded: "
            "give its .safetensors version (or convert it on a trusted machine)"
        )
    if path.suffix.lower() != ".safetensors":
        raise UserError(f"{what} '{path}' is not a .safetensors file: give a .safetensors file or a folder")


def _detect_architecture(path: Path, shapes: dict[str, list[int]]) -> Architecture:
    """Which known architecture an LDM checkpoint holds, from its UNet's width and text width."""
    conv_in = shapes.get(_LDM_UNET + "input_blocks.0.0.weight")
    text_widths = {
        shape[-1] for key, shape in shapes.items() if key.startswith(_LDM_UNET) and "attn2.to_k" in key
    }
    if conv_in is None or len(text_widths) != 1:
        raise UserError(
            f"'{path}' is not a Stable Diffusion checkpoint in the original layout (no {_LDM_UNET}* UNet): "
            "give an SD 1.x / 2.x .safetensors checkpoint or a diffusers folder"
        )
    found = (conv_in[0], text_widths.pop())
    for arch in ARCHITECTURES.values():
        if (arch.model_channels, arch.cross_attention_dim) == found:
            return arch
    raise UserError(
        f"'{path}' holds an unsupported architecture (UNet width {found[0]}, text width {found[1]}): "
        "only SD 1.x (768-d text) and SD 2.x / sd-turbo (1024-d text) are supported"
    )


def import_pipeline() -> type:
    """diffusers' StableDiffusionPipeline, imported only where needed and quietly: its module pulls in
    transformers' image processors, which warn at import on machines without torchvision (we use none)."""
    from transformers.utils import logging as transformers_logging

    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        from diffusers import StableDiffusionPipeline
    finally:
        transformers_logging.set_verbosity(level)
    return StableDiffusionPipeline


def load_single_file(path: Path, progress: bool) -> ModelStack:
    refuse_pickle(path, "model")
    arch = _detect_architecture(path, safetensors_shapes(path))
    with tempfile.TemporaryDirectory(prefix="tpos-live-config-") as scratch:
        config_folder = Path(scratch)
        _write_config_folder(arch, config_folder, progress)
        try:
            pipe = import_pipeline().from_single_file(
                str(path),
                config=str(config_folder),
                local_files_only=True,
                safety_checker=None,
                feature_extractor=None,
            )
        except NotImplementedError as error:  # accelerate cannot move the tensors the file left empty
            raise UserError(
                f"'{path}' lacks some of the model's weights: give a complete checkpoint"
            ) from error
        except LOAD_ERRORS as error:
            raise UserError(
                f"cannot convert '{path}' ({first_line(error)}): give an SD 1.x / 2.x checkpoint in the "
                "original layout, or a diffusers folder"
            ) from error
    for name in ("unet", "text_encoder", "vae"):  # the text encoder's empty tensors pass silently
        missing = [key for key, tensor in getattr(pipe, name).state_dict().items() if tensor.is_meta]
        if missing:
            raise UserError(
                f"'{path}' lacks {len(missing)} {name} tensors (e.g. {missing[0]}): "
                "give a complete checkpoint"
            )
    check_fit(pipe.unet, pipe.text_encoder, path)
    return ModelStack(
        unet=pipe.unet,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        vae=pipe.vae,
        taesd=None,
        scheduler_config=dict(arch.scheduler),
        name=path.name,
        random_weights=arch.text_family == TINY_FAMILY,
        text_family=arch.text_family,
        default_steps=0,  # load_stack suggests
        default_guidance=0.0,
    )


def _write_config_folder(arch: Architecture, folder: Path, progress: bool) -> None:
    """A diffusers folder without weights: what from_single_file needs to convert offline."""
    write_json(folder / "model_index.json", model_index(arch.scheduler["_class_name"]))
    write_json(folder / "unet" / "config.json", {"_class_name": "UNet2DConditionModel", **arch.unet})
    write_json(folder / "vae" / "config.json", {"_class_name": "AutoencoderKL", **arch.vae})
    write_json(folder / "text_encoder" / "config.json", arch.text_encoder)
    write_json(folder / "scheduler" / "scheduler_config.json", arch.scheduler)
    if arch.tokenizer_repo is None:
        tiny_tokenizer().save_pretrained(folder / "tokenizer")
    else:
        hint = "pass a diffusers folder with --model"
        source = hub_snapshot(arch.tokenizer_repo, TOKENIZER_FILES, "tokenizer repository", hint, progress)
        shutil.copytree(source / "tokenizer", folder / "tokenizer")
