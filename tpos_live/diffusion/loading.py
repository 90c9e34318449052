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

import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import diffusers
import huggingface_hub
import torch
import transformers
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError, safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from tpos_live.diffusion.architectures import (
    ARCHITECTURES,
    Architecture,
    architecture_fingerprint,
    tiny_vocab_and_merges,
)
from tpos_live.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
METADATA_FILE = "tpos_live.json"  # our own facts about a saved stack (defaults, random weights)
TINY_SEED = 0

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
TOKENIZER_FILES = ("tokenizer/*",)

# Errors the loaders of diffusers / transformers / safetensors raise for bad files.
_LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, SafetensorError)


@dataclass(frozen=True)
class Alias:
    """A named model: base weights, what to fuse into them, and the sampling that suits it."""

    model: str
    lora: str | None
    taesd: str | None
    default_steps: int
    default_guidance: float


ALIASES: dict[str, Alias] = {
    "sd15-lcm": Alias(
        model="stable-diffusion-v1-5/stable-diffusion-v1-5",
        lora="latent-consistency/lcm-lora-sdv1-5",
        taesd="madebyollin/taesd",
        default_steps=4,
        default_guidance=1.0,
    ),
    "sd-turbo": Alias(
        model="stabilityai/sd-turbo",
        lora=None,
        taesd="madebyollin/taesd",
        default_steps=1,
        default_guidance=0.0,
    ),
}
TINY_ALIAS = "tiny"
TINY_DEFAULTS = (4, 1.0)  # steps, text guidance: the tiny stack stands in for sd15-lcm


@dataclass(frozen=True)
class ModelSpec:
    """What to load.

    ``model``: an alias ("sd15-lcm", "sd-turbo", "tiny"), a diffusers folder, a single-file
    ``.safetensors`` checkpoint, or a hub id ("owner/name"). ``lora``: folder, ``.safetensors``
    file or hub id of a LoRA to fuse at ``lora_scale``. ``taesd``: folder or hub id of an
    AutoencoderTiny, or "none". Aliases fill ``lora`` and ``taesd`` when they are None.
    """

    model: str = "sd15-lcm"
    lora: str | None = None
    lora_scale: float = 1.0
    taesd: str | None = None
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ValueError("model must not be empty")
        if self.lora is not None and not self.lora.strip():
            raise ValueError("lora must be None or a path / hub id")
        if self.taesd is not None and not self.taesd.strip():
            raise ValueError("taesd must be None, 'none' or a path / hub id")
        if not math.isfinite(self.lora_scale):
            raise ValueError(f"lora_scale must be finite, got {self.lora_scale}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        try:
            torch.device(self.device)
        except RuntimeError as error:
            raise ValueError(f"device {self.device!r} is not a torch device: {error}") from error


@dataclass
class ModelStack:
    """The loaded components of a Stable Diffusion model and what suits it at inference."""

    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    vae: AutoencoderKL
    taesd: AutoencoderTiny | None
    scheduler_config: dict[str, Any]  # the model's own (pass to a scheduler class's from_config)
    name: str  # what was loaded, for messages
    random_weights: bool  # tiny / random stacks: pictures mean nothing
    text_family: str  # "clip-vit-l-14" (SD 1.x), "openclip-vit-h-14" (SD 2.x, sd-turbo) or "tiny"
    default_steps: int
    default_guidance: float

    @property
    def cross_attention_dim(self) -> int:
        return self.unet.config.cross_attention_dim

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def modules(self) -> dict[str, torch.nn.Module]:
        """The stack's torch modules by component name (TAESD only when present)."""
        modules = {"unet": self.unet, "text_encoder": self.text_encoder, "vae": self.vae}
        if self.taesd is not None:
            modules["taesd"] = self.taesd
        return modules


# --- public entry points ---------------------------------------------------------------------------


def load_stack(spec: ModelSpec, progress: bool = True) -> ModelStack:
    """Load the model ``spec`` names, fuse its LoRA, attach TAESD, then move it to device and dtype.

    Raises UserError (one line: what is wrong and what to do) for missing or unusable models.
    """
    alias = ALIASES.get(spec.model)
    if alias is not None:
        spec = replace(
            spec,
            model=alias.model,
            lora=alias.lora if spec.lora is None else spec.lora,
            taesd=alias.taesd if spec.taesd is None else spec.taesd,
        )
    with _progress_bars(progress):
        source = tiny_model_folder() if spec.model == TINY_ALIAS else _resolve_model(spec.model, progress)
        if source.is_file():
            stack = _load_single_file(source, progress)
        else:
            stack = _load_diffusers_folder(source, label=spec.model)
        saved_defaults = bool(_read_metadata(source))
        if spec.lora is not None:
            _fuse_lora(stack, spec.lora, spec.lora_scale, progress)
        _attach_taesd(stack, spec.taesd, source, progress)
    if alias is not None:
        stack.default_steps, stack.default_guidance = alias.default_steps, alias.default_guidance
    elif not saved_defaults:
        stack.default_steps, stack.default_guidance = _suggested_sampling(stack, spec.lora)
    return _place(stack, spec.device, DTYPES[spec.dtype])


def fast_defaults(model: str) -> dict[str, int | float]:
    """Steps and text guidance that suit a model named by alias, known before loading it.

    Other names give {}: their defaults are known once loaded (``ModelStack.default_steps`` /
    ``default_guidance``).
    """
    if model == TINY_ALIAS:
        # Random weights show the audio only when every step is guided (one guided step moves a
        # tiny-stack frame by ~0.1 of a level, below what H.264 keeps).
        return {"steps": TINY_DEFAULTS[0], "text_guidance": TINY_DEFAULTS[1], "delta_step": 0}
    alias = ALIASES.get(model)
    if alias is None:
        return {}
    return {"steps": alias.default_steps, "text_guidance": alias.default_guidance}


def build_tiny_stack(seed: int = 0) -> ModelStack:
    """The tiny stack: the classes of SD 1.x at toy sizes, random weights (fixed by ``seed``)."""
    steps, guidance = TINY_DEFAULTS
    stack = _build_random(ARCHITECTURES["tiny"], seed, default_steps=steps, default_guidance=guidance)
    _make_visibly_responsive(stack)
    return stack


# Default initialisation leaves a toy UNet nearly deaf to its conditions (~4% of its output) and a
# toy TAESD decoding everything to black, so a render on the tiny stack would not show the sound
# at all. Scaling two layers makes conditions and latents visibly change the frames; a change
# here changes the cached tiny model, hence its place in the fingerprint.
TINY_CROSS_ATTENTION_GAIN = 8.0
TINY_TAESD_OUTPUT_GAIN = 5.0


def _make_visibly_responsive(stack: ModelStack) -> None:
    with torch.no_grad():
        for name, module in stack.unet.named_modules():
            if name.endswith("attn2.to_out.0"):
                module.weight.mul_(TINY_CROSS_ATTENTION_GAIN)
        last = [m for m in stack.taesd.decoder.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.weight.mul_(TINY_TAESD_OUTPUT_GAIN)
        last.bias.fill_(0.5)  # the decoder's output is in [0, 1]: start mid-grey


def build_random_stack(arch: str, seed: int = 0) -> ModelStack:
    """A full-size "sd15" or "sd-turbo" architecture with random weights, for speed measurements.

    The tokenizer is the tiny one (its ids are valid for the full vocabulary). Build it under
    ``torch.device("meta")`` to count parameters without allocating them.
    """
    defaults = {"sd15": (4, 1.0), "sd-turbo": (1, 0.0)}
    if arch not in defaults:
        raise ValueError(f"arch must be one of {sorted(defaults)}, got {arch!r}")
    steps, guidance = defaults[arch]
    return _build_random(ARCHITECTURES[arch], seed, default_steps=steps, default_guidance=guidance)


def save_stack(stack: ModelStack, folder: str | os.PathLike) -> None:
    """Save ``stack`` as a diffusers Stable Diffusion folder (plus ``taesd/`` and our metadata).

    The folder must be new or empty. ``load_stack(ModelSpec(model=folder))`` loads it back.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"cannot save the model to '{folder}': it exists and is not an empty folder")
    with _progress_bars(False):
        for name, module in stack.modules().items():
            module.save_pretrained(folder / name)
        stack.tokenizer.save_pretrained(folder / "tokenizer")
    if stack.taesd is not None:
        # AutoencoderTiny records block_out_channels (for pipelines) that its __init__ does not take
        # back: drop it so that loading does not warn.
        taesd_config = json.loads((folder / "taesd" / "config.json").read_text())
        del taesd_config["block_out_channels"]
        _write_json(folder / "taesd" / "config.json", taesd_config)
    scheduler_class = stack.scheduler_config.get("_class_name", "DDIMScheduler")
    _write_json(folder / "scheduler" / "scheduler_config.json", stack.scheduler_config)
    _write_json(folder / "model_index.json", _model_index(scheduler_class))
    metadata = {
        "name": stack.name,
        "random_weights": stack.random_weights,
        "text_family": stack.text_family,
        "default_steps": stack.default_steps,
        "default_guidance": stack.default_guidance,
    }
    _write_json(folder / METADATA_FILE, metadata)


def tiny_model_folder() -> Path:
    """The saved tiny stack, built on first use: ``$TPOS_LIVE_CACHE/tiny-sd`` (default cache root
    ``~/.cache/tpos-live``). Rebuilt when the tiny architecture has changed since it was saved.

    Built in a temporary folder next to it and renamed into place, so a reader never sees half a
    model and two processes building at once both end up with a complete one.
    """
    root = Path(os.environ.get("TPOS_LIVE_CACHE") or "~/.cache/tpos-live").expanduser()
    folder = root / "tiny-sd"
    fingerprint = architecture_fingerprint(ARCHITECTURES["tiny"]) + _tiny_init_tag()
    if _read_metadata(folder).get("fingerprint") == fingerprint:
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".tiny-sd-build-") as scratch:
        built = Path(scratch) / "tiny-sd"
        save_stack(build_tiny_stack(seed=TINY_SEED), built)
        _write_json(built / METADATA_FILE, {**_read_metadata(built), "fingerprint": fingerprint})
        if folder.exists():  # stale: an older tiny architecture
            with contextlib.suppress(FileNotFoundError):  # another process moved it first
                folder.rename(Path(scratch) / "stale")
        try:
            built.rename(folder)
        except OSError:
            if _read_metadata(folder).get("fingerprint") != fingerprint:
                raise  # not a concurrent build that got there first
    return folder


def _tiny_init_tag() -> str:
    return f"-x{TINY_CROSS_ATTENTION_GAIN:g}-t{TINY_TAESD_OUTPUT_GAIN:g}"


# --- random stacks ---------------------------------------------------------------------------------


def _tiny_tokenizer() -> CLIPTokenizer:
    vocab, merges = tiny_vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _build_random(arch: Architecture, seed: int, default_steps: int, default_guidance: float) -> ModelStack:
    # A private RNG stream: building a stack must not move the caller's global seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**arch.unet)
        text_encoder = CLIPTextModel(CLIPTextConfig(**arch.text_encoder))
        vae = AutoencoderKL(**arch.vae)
        taesd = AutoencoderTiny(**arch.taesd)
    stack = ModelStack(
        unet=unet,
        text_encoder=text_encoder,
        tokenizer=_tiny_tokenizer(),
        vae=vae,
        taesd=taesd,
        scheduler_config=dict(arch.scheduler),
        name=f"{arch.name} (random weights)",
        random_weights=True,
        text_family=arch.text_family,
        default_steps=default_steps,
        default_guidance=default_guidance,
    )
    for module in stack.modules().values():
        module.eval()
    return stack


# --- resolving names to local files ----------------------------------------------------------------

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _resolve_model(model: str, progress: bool) -> Path:
    path = Path(model).expanduser()
    if path.exists():
        return path
    if _REPO_ID.match(model) and not model.endswith((".safetensors", ".ckpt")):
        hint = "pass a local folder with --model, or try --model tiny"
        return _hub_snapshot(model, MODEL_FILES, "model", hint, progress)
    names = ", ".join([*ALIASES, TINY_ALIAS])
    raise UserError(
        f"model '{model}' does not exist: give a diffusers folder, a .safetensors file, "
        f"a hub id (owner/name) or one of {names}"
    )


def _resolve_lora(lora: str, progress: bool) -> Path:
    """The weights file of a LoRA named by a .safetensors file, a folder holding one, or a hub id."""
    path = Path(lora).expanduser()
    if not path.exists():
        if not _REPO_ID.match(lora):
            raise UserError(f"LoRA '{lora}' does not exist: give a .safetensors file, a folder or a hub id")
        path = _hub_snapshot(lora, ("*.safetensors",), "LoRA", "pass a local file with --lora", progress)
    if path.is_file():
        _refuse_pickle(path, "LoRA")
        return path
    files = sorted(path.glob("*.safetensors"))
    preferred = [file for file in files if file.name == "pytorch_lora_weights.safetensors"]
    if preferred or len(files) == 1:
        return (preferred or files)[0]
    found = "none" if not files else ", ".join(file.name for file in files)
    raise UserError(f"LoRA folder '{lora}' must hold one .safetensors file (found: {found}): give the file")


def _hub_cache() -> Path:
    # huggingface_hub reads these once at import; reading them now honours changes made since.
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(huggingface_hub.constants.HF_HUB_CACHE)


def _hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is None:
        return bool(huggingface_hub.constants.HF_HUB_OFFLINE)
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _missing(folder: Path, patterns: tuple[str, ...]) -> list[str]:
    return [pattern for pattern in patterns if not any(folder.glob(pattern))]


def _hub_snapshot(repo_id: str, patterns: tuple[str, ...], what: str, hint: str, progress: bool) -> Path:
    """The local snapshot of the files ``patterns`` of ``repo_id``: from the cache, else downloaded."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UserError(
            f"{what} '{repo_id}' is neither a local path nor a valid hub id ({_first_line(error)}): "
            "check the name"
        ) from error
    cache = _hub_cache()
    allow = list(patterns)
    with contextlib.suppress(LocalEntryNotFoundError):
        snapshot = huggingface_hub.snapshot_download(
            repo_id, cache_dir=cache, allow_patterns=allow, local_files_only=True
        )
        if not _missing(Path(snapshot), patterns):
            return Path(snapshot)

    def unavailable(reason: str) -> UserError:
        return UserError(
            f"{what} '{repo_id}' is not in the Hugging Face cache ({cache}) and cannot be downloaded "
            f"({reason}): run `hf download {repo_id}` on a connected machine and copy the cache, or {hint}"
        )

    if _hub_offline():
        raise unavailable("offline: HF_HUB_OFFLINE is set")
    try:
        folder = Path(huggingface_hub.snapshot_download(repo_id, cache_dir=cache, allow_patterns=allow))
    except (GatedRepoError, RepositoryNotFoundError) as error:
        raise UserError(
            f"{what} '{repo_id}' is not on the Hugging Face hub, or is private or gated "
            f"({_first_line(error)}): check the name, or run `hf auth login` if you have access"
        ) from error
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise unavailable(_first_line(error)) from error
    missing = _missing(folder, patterns)
    if missing:
        raise UserError(
            f"{what} '{repo_id}' lacks {', '.join(missing)} (we load only safetensors weights in the "
            f"diffusers layout): {hint}"
        )
    return folder


# --- diffusers folders -----------------------------------------------------------------------------


def _load_diffusers_folder(folder: Path, label: str) -> ModelStack:
    """Load a diffusers folder; ``label`` names it in messages unless the folder names itself."""
    parts = ("unet", "text_encoder", "tokenizer", "vae", "scheduler")
    missing = [name for name in parts if not (folder / name).is_dir()]
    if missing:
        raise UserError(
            f"'{folder}' is not a diffusers Stable Diffusion folder (it lacks {'/, '.join(missing)}/): "
            "give a folder saved by diffusers, a .safetensors checkpoint or a hub id"
        )
    unet = _load_component(UNet2DConditionModel, folder, "unet")
    text_encoder = _load_component(CLIPTextModel, folder, "text_encoder")
    tokenizer = _load_component(CLIPTokenizer, folder, "tokenizer")
    vae = _load_component(AutoencoderKL, folder, "vae")
    scheduler_config = _read_scheduler_config(folder / "scheduler")
    metadata = _read_metadata(folder)
    text_family = metadata.get("text_family") or _text_family(text_encoder, folder)
    _check_fit(unet, text_encoder, folder)
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
        default_steps=int(metadata.get("default_steps", 0)),  # 0: load_stack suggests
        default_guidance=float(metadata.get("default_guidance", 0.0)),
    )


def _load_component(cls, folder: Path, subfolder: str | None = None):
    """``cls.from_pretrained`` (safetensors weights only), its failures turned into a UserError."""
    kwargs: dict[str, Any] = {} if cls is CLIPTokenizer else {"use_safetensors": True}
    if subfolder is not None:
        kwargs["subfolder"] = subfolder
    where = folder / subfolder if subfolder else folder
    for weights in where.glob("*.safetensors"):
        _safetensors_shapes(weights)  # a corrupt file gets a clear message, not a loader's
    try:
        return cls.from_pretrained(folder, **kwargs)
    except _LOAD_ERRORS as error:
        raise UserError(
            f"cannot load '{where}' ({_first_line(error)}): its files may be incomplete, corrupt or not "
            "safetensors; download or save the model again"
        ) from error


def _read_scheduler_config(folder: Path) -> dict[str, Any]:
    path = folder / "scheduler_config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        reason = _first_line(error)
        raise UserError(f"cannot read '{path}' ({reason}): download or save the model again") from error
    if not isinstance(config, dict):
        raise UserError(f"'{path}' is not a JSON object: download or save the model again")
    return {key: value for key, value in config.items() if key != "_diffusers_version"}


def _text_family(text_encoder: CLIPTextModel, source: Path) -> str:
    families = {768: "clip-vit-l-14", 1024: "openclip-vit-h-14"}
    width = text_encoder.config.hidden_size
    if width not in families:
        raise UserError(
            f"'{source}' has a {width}-d text encoder: only SD 1.x (768-d) and SD 2.x / sd-turbo (1024-d) "
            "models are supported"
        )
    return families[width]


def _check_fit(unet: UNet2DConditionModel, text_encoder: CLIPTextModel, source: Path) -> None:
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise UserError(
            f"'{source}' does not fit together: the UNet attends to {unet.config.cross_attention_dim}-d text "
            f"but the text encoder gives {text_encoder.config.hidden_size}-d; give a complete, matching model"
        )


# --- single-file checkpoints (original LDM layout) -------------------------------------------------

_LDM_UNET = "model.diffusion_model."


def _refuse_pickle(path: Path, what: str) -> None:
    if path.suffix.lower() in {".ckpt", ".pt", ".pth", ".bin", ".pkl"}:
        raise UserError(
            f"{what} '{path}' is a pickled checkpoint, which can run code when loaded: "
            "give its .safetensors version (or convert it on a trusted machine)"
        )
    if path.suffix.lower() != ".safetensors":
        raise UserError(f"{what} '{path}' is not a .safetensors file: give a .safetensors file or a folder")


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor names and shapes from the file's header (reads no tensor data); checks the file."""
    try:
        with safe_open(str(path), framework="pt") as file:
            return {key: file.get_slice(key).get_shape() for key in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise UserError(
            f"'{path}' is not a readable safetensors file ({_first_line(error)}): it may be corrupt or "
            "incomplete; download it again"
        ) from error


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


def _load_single_file(path: Path, progress: bool) -> ModelStack:
    _refuse_pickle(path, "model")
    arch = _detect_architecture(path, _safetensors_shapes(path))
    with tempfile.TemporaryDirectory(prefix="tpos-live-config-") as scratch:
        config_folder = Path(scratch)
        _write_config_folder(arch, config_folder, progress)
        try:
            pipe = StableDiffusionPipeline.from_single_file(
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
        except _LOAD_ERRORS as error:
            raise UserError(
                f"cannot convert '{path}' ({_first_line(error)}): give an SD 1.x / 2.x checkpoint in the "
                "original layout, or a diffusers folder"
            ) from error
    for name in ("unet", "text_encoder", "vae"):  # the text encoder's empty tensors pass silently
        missing = [key for key, tensor in getattr(pipe, name).state_dict().items() if tensor.is_meta]
        if missing:
            raise UserError(
                f"'{path}' lacks {len(missing)} {name} tensors (e.g. {missing[0]}): "
                "give a complete checkpoint"
            )
    _check_fit(pipe.unet, pipe.text_encoder, path)
    return ModelStack(
        unet=pipe.unet,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        vae=pipe.vae,
        taesd=None,
        scheduler_config=dict(arch.scheduler),
        name=path.name,
        random_weights=arch.text_family == "tiny",
        text_family=arch.text_family,
        default_steps=0,  # load_stack suggests
        default_guidance=0.0,
    )


def _write_config_folder(arch: Architecture, folder: Path, progress: bool) -> None:
    """A diffusers folder without weights: what from_single_file needs to convert offline."""
    _write_json(folder / "model_index.json", _model_index(arch.scheduler["_class_name"]))
    _write_json(folder / "unet" / "config.json", {"_class_name": "UNet2DConditionModel", **arch.unet})
    _write_json(folder / "vae" / "config.json", {"_class_name": "AutoencoderKL", **arch.vae})
    _write_json(folder / "text_encoder" / "config.json", arch.text_encoder)
    _write_json(folder / "scheduler" / "scheduler_config.json", arch.scheduler)
    if arch.tokenizer_repo is None:
        _tiny_tokenizer().save_pretrained(folder / "tokenizer")
    else:
        hint = "pass a diffusers folder with --model"
        source = _hub_snapshot(arch.tokenizer_repo, TOKENIZER_FILES, "tokenizer repository", hint, progress)
        shutil.copytree(source / "tokenizer", folder / "tokenizer")


# --- LoRA and TAESD --------------------------------------------------------------------------------


def _fuse_lora(stack: ModelStack, lora: str, scale: float, progress: bool) -> None:
    """Fuse a LoRA into the UNet (and text encoder) weights; afterwards they are plain modules."""
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
    except _LOAD_ERRORS as error:
        raise UserError(
            f"LoRA '{lora}' does not fit '{stack.name}' ({_first_line(error)}): "
            "give a LoRA trained for this base model"
        ) from error
    if not any(pipe.get_list_adapters().values()):
        raise UserError(
            f"LoRA '{lora}' has no weights for the UNet or text encoder of '{stack.name}': "
            "give a LoRA trained for this base model"
        )
    pipe.fuse_lora(lora_scale=scale, adapter_names=["fused"])
    pipe.unload_lora_weights()
    stack.name += f" + {_short_name(lora)}"


def _attach_taesd(stack: ModelStack, taesd: str | None, source: Path, progress: bool) -> None:
    if taesd is not None and taesd.lower() == "none":
        return
    if taesd is None:
        if not (source.is_dir() and (source / "taesd").is_dir()):
            return
        folder, label = source / "taesd", "taesd"
    else:
        folder, label = _resolve_taesd(taesd, progress), _short_name(taesd)
    stack.taesd = _load_component(AutoencoderTiny, folder)
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
    if path.exists() or not _REPO_ID.match(taesd):  # a file, or a path that does not exist
        raise UserError(f"TAESD '{taesd}' is not a folder or hub id: give an AutoencoderTiny folder, or none")
    hint = "pass a local folder with --taesd, or --taesd none"
    return _hub_snapshot(taesd, TAESD_FILES, "TAESD", hint, progress)


# --- finishing -------------------------------------------------------------------------------------


def _suggested_sampling(stack: ModelStack, lora: str | None) -> tuple[int, float]:
    """Steps and text guidance that suit a model we know only by its files and name."""
    if stack.text_family == "tiny":
        return TINY_DEFAULTS
    if "lcm" in (lora or "").lower() or stack.scheduler_config.get("_class_name") == "LCMScheduler":
        return 4, 1.0  # latent consistency: few steps, guidance distilled in
    if "turbo" in stack.name.lower():
        return 1, 0.0  # adversarial distillation: one step, no classifier-free guidance
    return 50, 7.5  # plain SD, as in the paper


def _place(stack: ModelStack, device: str, dtype: torch.dtype) -> ModelStack:
    try:
        for module in stack.modules().values():
            # nn.Module.to, not diffusers' override: that one warns about float32-only submodules
            # on every cast, even for models that have none.
            torch.nn.Module.to(module, device=device, dtype=dtype).eval()
            _own_aligned_memory(module)
    except (RuntimeError, AssertionError) as error:  # torch raises AssertionError for missing CUDA
        raise UserError(
            f"cannot put the model on device '{device}' ({_first_line(error)}): choose another device"
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


def _short_name(name: str) -> str:
    return Path(name.rstrip("/")).stem or name


def _first_line(error: BaseException) -> str:
    """The gist of a library error for a one-line message (a heading ending in ':' takes its first item)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[1]}"
    return lines[0]


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


def _model_index(scheduler_class: str) -> dict[str, Any]:
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


def _read_metadata(folder: Path) -> dict[str, Any]:
    path = folder / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text())
    except ValueError as error:
        raise UserError(f"'{path}' is not valid JSON ({error}): delete it or save the model again") from error
    return metadata if isinstance(metadata, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _progress_bars(show: bool) -> Iterator[None]:
    """Show or hide the download / loading bars of huggingface_hub, transformers and diffusers."""
    if show:
        yield
        return
    transformers_on = transformers.utils.logging.is_progress_bar_enabled()
    diffusers_on = diffusers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()
    try:
        with huggingface_hub.utils.disable_progress_bars():
            yield
    finally:
        if transformers_on:
            transformers.utils.logging.enable_progress_bar()
        if diffusers_on:
            diffusers.utils.logging.enable_progress_bar()
