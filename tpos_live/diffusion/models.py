"""Which models can be named: aliases, the spec of what to load, and the sampling that suits each."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tpos_live.config import PAPER_PRESET
from tpos_live.errors import UserError
from tpos_live.names import DEVICE_NAMES_HELP, DEVICE_PATTERN, DTYPE_NAMES, MODEL_METADATA_FILE, TINY_FAMILY
from tpos_live.paths import mini_model_folder

if TYPE_CHECKING:
    from tpos_live.diffusion.stack import ModelStack


@dataclass(frozen=True)
class Sampling:
    """The fast-mode sampling that suits a kind of model: steps, text guidance g, and the sampler (None: the
    mode's, lcm)."""

    steps: int
    guidance: float
    sampler: str | None = None


# Text guidance g of equation (6) is at least 1 (tpos_live.config.MIN_TEXT_GUIDANCE): for the distilled
# models, whose own pipelines run without classifier-free guidance (diffusers' guidance_scale 0 or 1), g = 1
# is that: the text branch alone, eps(z, c_text). The null branch is still computed for the audio edit.
# A model run with classifier-free guidance is not distilled: LCM's few steps do not suit it; PLMS, as the
# official code samples plain SD. The aliases and the models known only by their files take theirs from here.
LATENT_CONSISTENCY = Sampling(steps=4, guidance=1.0)  # few steps, guidance distilled in
ADVERSARIAL = Sampling(steps=1, guidance=1.0)  # turbo: one step, the text branch alone
PLAIN_SD = Sampling(PAPER_PRESET.steps, PAPER_PRESET.text_guidance, PAPER_PRESET.sampler)  # as in the paper
TINY_SAMPLING = LATENT_CONSISTENCY  # the tiny stack stands in for sd15-lcm


@dataclass(frozen=True)
class Alias:
    """A named model: base weights, what to fuse into them, and the sampling that suits it."""

    model: str
    lora: str | None
    taesd: str | None
    sampling: Sampling


ALIASES: dict[str, Alias] = {
    "sd15-lcm": Alias(
        model="stable-diffusion-v1-5/stable-diffusion-v1-5",
        lora="latent-consistency/lcm-lora-sdv1-5",
        taesd="madebyollin/taesd",
        sampling=LATENT_CONSISTENCY,
    ),
    "sd-turbo": Alias(model="stabilityai/sd-turbo", lora=None, taesd="madebyollin/taesd", sampling=ADVERSARIAL),
    # The official TPoS code's model: plain SD v1.4 (no distillation), paper mode's default.
    "sd14": Alias(model="CompVis/stable-diffusion-v1-4", lora=None, taesd="madebyollin/taesd", sampling=PLAIN_SD),
}
FAST_DEFAULT_MODEL = "sd15-lcm"
PAPER_DEFAULT_MODEL = "sd14"
TINY_ALIAS = "tiny"
MINI_ALIAS = "mini"  # the mini world's trained model, shipped in the package (tpos_live.paths)


@dataclass(frozen=True)
class ModelSpec:
    """What to load.

    ``model``: an alias ("sd15-lcm", "sd-turbo", "sd14", "tiny", "mini"), a diffusers folder, a single-file
    ``.safetensors`` checkpoint, or a hub id ("owner/name"). ``lora``: folder, ``.safetensors``
    file or hub id of a LoRA to fuse at ``lora_scale``. ``taesd``: folder or hub id of an
    AutoencoderTiny, or "none". Aliases fill ``lora`` and ``taesd`` when they are None. ``device``
    ("cpu", "cuda", "cuda:N", "mps") and ``dtype`` may be "auto": ``load_stack`` picks them for this machine
    (``tpos_live.runtime.resolve_device``, which also refuses what the machine cannot do).
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
        if self.dtype not in ("auto", *DTYPE_NAMES):
            raise ValueError(f"dtype must be auto or one of {DTYPE_NAMES}, got {self.dtype!r}")
        if not re.fullmatch(DEVICE_PATTERN, self.device):
            raise ValueError(f"unknown device {self.device!r}: use {DEVICE_NAMES_HELP}")


def fast_defaults(model: str, stack: ModelStack | None = None) -> dict[str, int | float | str]:
    """Fast mode's steps, text guidance (and sampler, when LCM's does not suit it) for a model.

    Where they come from, in this order (paper mode takes none of them: its preset is the paper's):

    1. ``tiny``: :data:`TINY_SAMPLING`;
    2. an alias: its :class:`Sampling` (the README lists them), known before loading;
    3. any other model (``mini`` too): ``ModelStack.default_steps`` / ``default_guidance``, which a
       folder saved by tpos-live records (read from its metadata before ``stack`` is loaded) and
       :func:`suggested_sampling` fills in otherwise. A model run with classifier-free guidance (g > 1)
       is not distilled, so it gets PLMS, as ``sd14``, unless the folder's ``fast_settings`` (measured
       for it) say otherwise; those come last.

    Without ``stack``, a name that is neither an alias nor a folder recording its sampling gives {} (the
    fast preset, until the model is loaded).
    """
    if model == TINY_ALIAS:
        # One guided step, as the real fast models, so that frames come from keyframes (exact there). On
        # random weights it barely moves a frame (~0.1 of a level): --delta-step 0 shows the audio more.
        return {"steps": TINY_SAMPLING.steps, "text_guidance": TINY_SAMPLING.guidance}
    alias = ALIASES.get(model)
    measured: dict[str, Any] = {}
    if alias is not None:
        steps, guidance, sampler = alias.sampling.steps, alias.sampling.guidance, alias.sampling.sampler
    else:
        recorded = _recorded_sampling(model) if stack is None else \
            (stack.default_steps, stack.default_guidance, stack.fast_settings)
        if recorded is None:
            return {}
        steps, guidance, measured = recorded
        sampler = PLAIN_SD.sampler if guidance > 1.0 else None
    defaults: dict[str, int | float | str] = {"steps": steps, "text_guidance": guidance}
    if sampler is not None:
        defaults["sampler"] = sampler
    defaults.update(measured)
    return defaults


def _recorded_sampling(model: str) -> tuple[int, float, dict[str, Any]] | None:
    """The steps, guidance and measured fast settings a local folder saved by tpos-live records, read
    before any weights load (so that flags are checked against them), or None."""
    folder = mini_model_folder() if model == MINI_ALIAS else Path(model).expanduser()
    try:
        steps, guidance, measured = recorded_sampling(read_metadata(folder), folder)
    except (OSError, ValueError, TypeError, UserError):
        return None  # no folder of ours, or a bad one: loading it says what is wrong
    return (steps, guidance, measured) if steps > 0 else None


def read_metadata(folder: Path) -> dict[str, Any]:
    """Our facts about a saved model folder (its ``tpos_live.json``), {} when it has none."""
    path = folder / MODEL_METADATA_FILE
    if not path.is_file():
        return {}
    try:
        metadata = json.loads(path.read_text())
    except ValueError as error:
        raise UserError(f"'{path}' is not valid JSON ({error}): delete it or save the model again") from error
    return metadata if isinstance(metadata, dict) else {}


def recorded_sampling(metadata: dict[str, Any], folder: Path) -> tuple[int, float, dict[str, Any]]:
    """The fast-mode steps, text guidance (0 and 0.0 when not recorded: the loader suggests them) and
    measured settings that a folder's metadata records."""
    settings = metadata.get("fast_settings", {})
    if not isinstance(settings, dict):
        raise UserError(f"'{folder / MODEL_METADATA_FILE}': fast_settings must be a JSON object: save the model "
                        "again")
    return int(metadata.get("default_steps", 0)), float(metadata.get("default_guidance", 0.0)), dict(settings)


def suggested_sampling(stack: ModelStack, lora: str | None) -> Sampling:
    """The sampling that suits a model we know only by its files and name: what its name or scheduler says
    of its distillation first (a tiny test model can be marked distilled too)."""
    if "lcm" in (lora or "").lower() or stack.scheduler_config.get("_class_name") == "LCMScheduler":
        return LATENT_CONSISTENCY
    if "turbo" in stack.name.lower():
        return ADVERSARIAL
    if stack.text_family == TINY_FAMILY:
        return TINY_SAMPLING
    return PLAIN_SD


def default_model(mode: str) -> str:
    """The model a mode uses when none is named: paper mode the official code's SD v1.4, fast mode
    SD 1.5 with the LCM LoRA."""
    return PAPER_DEFAULT_MODEL if mode == "paper" else FAST_DEFAULT_MODEL


def distillation(model: str, lora: str | None = None) -> str | None:
    """How the model named ``model`` (with ``lora``) is distilled, as far as its name tells, or None.

    Used to warn when paper mode (50 PLMS steps at g = 7.5, made for plain SD) runs on a few-step model.
    """
    alias = ALIASES.get(model)
    if alias is not None:
        model, lora = alias.model, alias.lora if lora is None else lora
    names = f"{model} {lora or ''}".lower()
    if "lcm" in names:
        return "LCM-distilled (latent consistency)"
    if "turbo" in names:
        return "adversarially distilled (turbo)"
    return None
