"""The loaded model stack: what the renderer, the backends and the encoders work with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from tpos_live.names import DTYPE_NAMES

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


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
    text_family: str  # one of tpos_live.names.TEXT_FAMILIES
    default_steps: int
    default_guidance: float
    about: str = ""  # what the model is, said once when it loads (the mini world's model says it is no SD)
    encoder: Path | None = None  # the TPoS checkpoint saved with the model, trained for its text encoder
    # fast mode's settings measured for this model beyond steps and guidance (delta_step, audio_guidance...)
    fast_settings: dict[str, Any] = field(default_factory=dict)

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
