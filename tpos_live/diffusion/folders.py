"""Diffusers folders: loading a Stable Diffusion folder component by component, and saving one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import diffusers
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors import SafetensorError, safe_open
from transformers import CLIPTextModel, CLIPTokenizer

from tpos_live.diffusion.hub import progress_bars
from tpos_live.diffusion.models import read_metadata, recorded_sampling
from tpos_live.diffusion.stack import ModelStack
from tpos_live.errors import UserError, first_line
from tpos_live.names import CLIP_L14_FAMILY, MODEL_METADATA_FILE, OPENCLIP_H14_FAMILY

METADATA_FILE = MODEL_METADATA_FILE  # the name the savers and tests know it by
ENCODER_NAME = "encoder"  # a TPoS checkpoint saved in the folder (encoder.safetensors + encoder.json)


# What a diffusers Stable Diffusion folder must hold for us (weights as safetensors only).
MODEL_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/*",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)


TAESD_FILES = ("config.json", "diffusion_pytorch_model.safetensors")


# Errors the loaders of diffusers / transformers / safetensors raise for bad files.
LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, SafetensorError)


def load_diffusers_folder(folder: Path, label: str) -> ModelStack:
    """Load a diffusers folder; ``label`` names it in messages unless the folder names itself."""
    parts = ("unet", "text_encoder", "tokenizer", "vae", "scheduler")
    missing = [name for name in parts if not (folder / name).is_dir()]
    if missing:
        raise UserError(
            f"'{folder}' is not a diffusers Stable Diffusion folder (it lacks {'/, '.join(missing)}/): "
            "give a folder saved by diffusers, a .safetensors checkpoint or a hub id"
        )
    unet = load_component(UNet2DConditionModel, folder, "unet")
    text_encoder = load_component(CLIPTextModel, folder, "text_encoder")
    tokenizer = load_component(CLIPTokenizer, folder, "tokenizer")
    vae = load_component(AutoencoderKL, folder, "vae")
    scheduler_config = _read_scheduler_config(folder / "scheduler")
    metadata = read_metadata(folder)
    text_family = metadata.get("text_family") or _text_family(text_encoder, folder)
    check_fit(unet, text_encoder, folder)
    default_steps, default_guidance, fast_settings = recorded_sampling(metadata, folder)  # 0: load_stack suggests
    return ModelStack(
        unet=unet,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        vae=vae,
        taesd=None,
        scheduler_config=scheduler_config,
        name=metadata.get("name", label),
        random_weights=bool(metadata.get("random_weights", False)),
        text_family=text_family,
        default_steps=default_steps,
        default_guidance=default_guidance,
        about=str(metadata.get("about", "")),
        fast_settings=fast_settings,
        encoder=own_encoder(folder),
    )


def own_encoder(folder: Path) -> Path | None:
    """The TPoS checkpoint saved with the model in ``folder`` (its .safetensors), or None."""
    weights, config = (folder / f"{ENCODER_NAME}{suffix}" for suffix in (".safetensors", ".json"))
    return weights if weights.is_file() and config.is_file() else None


def load_component(cls, folder: Path, subfolder: str | None = None):
    """``cls.from_pretrained`` (safetensors weights only), its failures turned into a UserError."""
    kwargs: dict[str, Any] = {} if cls is CLIPTokenizer else {"use_safetensors": True}
    if subfolder is not None:
        kwargs["subfolder"] = subfolder
    where = folder / subfolder if subfolder else folder
    for weights in where.glob("*.safetensors"):
        safetensors_shapes(weights)  # a corrupt file gets a clear message, not a loader's
    try:
        return cls.from_pretrained(folder, **kwargs)
    except LOAD_ERRORS as error:
        raise UserError(
            f"cannot load '{where}' ({first_line(error)}): its files may be incomplete, corrupt or not "
            "safetensors; download or save the model again"
        ) from error


def _read_scheduler_config(folder: Path) -> dict[str, Any]:
    path = folder / "scheduler_config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        reason = first_line(error)
        raise UserError(f"cannot read '{path}' ({reason}): download or save the model again") from error
    if not isinstance(config, dict):
        raise UserError(f"'{path}' is not a JSON object: download or save the model again")
    return {key: value for key, value in config.items() if key != "_diffusers_version"}


def _text_family(text_encoder: CLIPTextModel, source: Path) -> str:
    families = {768: CLIP_L14_FAMILY, 1024: OPENCLIP_H14_FAMILY}
    width = text_encoder.config.hidden_size
    if width not in families:
        raise UserError(
            f"'{source}' has a {width}-d text encoder: only SD 1.x (768-d) and SD 2.x / sd-turbo (1024-d) "
            "models are supported"
        )
    return families[width]


def check_fit(unet: UNet2DConditionModel, text_encoder: CLIPTextModel, source: Path) -> None:
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise UserError(
            f"'{source}' does not fit together: the UNet attends to {unet.config.cross_attention_dim}-d text "
            f"but the text encoder gives {text_encoder.config.hidden_size}-d; give a complete, matching model"
        )


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor names and shapes from the file's header (reads no tensor data); checks the file."""
    try:
        with safe_open(str(path), framework="pt") as file:
            return {key: file.get_slice(key).get_shape() for key in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise UserError(
            f"'{path}' is not a readable safetensors file ({first_line(error)}): it may be corrupt or "
            "incomplete; download it again"
        ) from error


def save_stack(stack: ModelStack, folder: str | os.PathLike) -> None:
    """Save ``stack`` as a diffusers Stable Diffusion folder (plus ``taesd/`` and our metadata).

    The folder must be new or empty. ``load_stack(ModelSpec(model=folder))`` loads it back.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"cannot save the model to '{folder}': it exists and is not an empty folder")
    with progress_bars(False):
        for name, module in stack.modules().items():
            module.save_pretrained(folder / name)
        stack.tokenizer.save_pretrained(folder / "tokenizer")
    if stack.taesd is not None:
        # AutoencoderTiny records block_out_channels (for pipelines) that its __init__ does not take
        # back: drop it so that loading does not warn.
        taesd_config = json.loads((folder / "taesd" / "config.json").read_text())
        del taesd_config["block_out_channels"]
        write_json(folder / "taesd" / "config.json", taesd_config)
    scheduler_class = stack.scheduler_config.get("_class_name", "DDIMScheduler")
    write_json(folder / "scheduler" / "scheduler_config.json", stack.scheduler_config)
    write_json(folder / "model_index.json", model_index(scheduler_class))
    metadata = {
        "name": stack.name,
        "random_weights": stack.random_weights,
        "text_family": stack.text_family,
        "default_steps": stack.default_steps,
        "default_guidance": stack.default_guidance,
    }
    if stack.encoder is not None:  # the model's own TPoS encoder goes with it
        for suffix in (".safetensors", ".json"):
            shutil.copyfile(stack.encoder.with_suffix(suffix), folder / f"{ENCODER_NAME}{suffix}")
    if stack.about:
        metadata["about"] = stack.about
    if stack.fast_settings:
        metadata["fast_settings"] = stack.fast_settings
    write_json(folder / METADATA_FILE, metadata)


def model_index(scheduler_class: str) -> dict[str, Any]:
    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", scheduler_class],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
