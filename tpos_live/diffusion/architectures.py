"""Component configs of the Stable Diffusion architectures we build, convert or load.

Three architectures:

- ``sd15``: Stable Diffusion 1.x (UNet with 768-d cross-attention, CLIP ViT-L/14 text encoder).
- ``sd-turbo``: Stable Diffusion 2.x as used by sd-turbo (1024-d cross-attention, OpenCLIP ViT-H/14 text).
- ``tiny``: the same classes at toy sizes, random weights, for tests and for running without downloads.

The full-size configs are the ones published with the models (the ``config.json`` of each
component folder). They serve three purposes: random full-size stacks for speed measurements
(cost does not depend on the weights' values), the local config folder that lets diffusers convert
a single-file LDM checkpoint without fetching anything, and the tiny stack.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tpos_live.names import CLIP_L14_FAMILY, OPENCLIP_H14_FAMILY, TINY_FAMILY

# --- Stable Diffusion 1.x --------------------------------------------------------------------------

SD15_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-5,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

# CLIP ViT-L/14's text tower. eos_token_id 2 is the legacy value of the published config: with it,
# transformers pools at the highest token id (the end token) instead of searching for an id.
CLIP_VIT_L_14_TEXT: dict[str, Any] = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-5,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}

SD_VAE: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

SD15_SCHEDULER: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

# --- Stable Diffusion 2.x / sd-turbo ---------------------------------------------------------------

SD_TURBO_UNET: dict[str, Any] = {
    **SD15_UNET,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "use_linear_projection": True,
}

OPENCLIP_VIT_H_14_TEXT: dict[str, Any] = {
    **CLIP_VIT_L_14_TEXT,
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 23,  # OpenCLIP ViT-H has 24; SD 2.x takes the penultimate layer's output
    "projection_dim": 512,
}

SD_TURBO_SCHEDULER: dict[str, Any] = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "trailing",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

# TAESD (madebyollin/taesd): AutoencoderTiny's defaults, spelled out.
TAESD: dict[str, Any] = {
    "act_fn": "relu",
    "decoder_block_out_channels": [64, 64, 64, 64],
    "encoder_block_out_channels": [64, 64, 64, 64],
    "force_upcast": False,
    "in_channels": 3,
    "latent_channels": 4,
    "latent_magnitude": 3,
    "latent_shift": 0.5,
    "num_decoder_blocks": [3, 3, 3, 1],
    "num_encoder_blocks": [1, 3, 3, 3],
    "out_channels": 3,
    "scaling_factor": 1.0,
    "upsampling_scaling_factor": 2,
}

# --- tiny ------------------------------------------------------------------------------------------

# Both levels have cross-attention so that every conditioning path is exercised. The VAE and TAESD
# downscale by 4, not SD's 8: code that hard-codes 8 fails on the tiny stack instead of passing.
TINY_UNET: dict[str, Any] = {
    **SD15_UNET,
    "attention_head_dim": 2,
    "block_out_channels": [32, 64],
    "cross_attention_dim": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "sample_size": 16,
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

# The random tiny UNet's latents spread ~16 wide where SD's spread ~1 (its x0 predictions are not
# trained), and decoders saturate on them. SD's scaling factor exists to bring latents to unit
# spread, so the tiny decoders get one matched to the tiny UNet.
TINY_LATENT_SCALING = 16.0

TINY_VAE: dict[str, Any] = {
    **SD_VAE,
    "scaling_factor": TINY_LATENT_SCALING,
    "block_out_channels": [16, 32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 64,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
}

TINY_TAESD: dict[str, Any] = {
    **TAESD,
    "scaling_factor": TINY_LATENT_SCALING,
    "decoder_block_out_channels": [16, 16, 16],
    "encoder_block_out_channels": [16, 16, 16],
    "num_decoder_blocks": [1, 1, 1],
    "num_encoder_blocks": [1, 1, 1],
}


def tiny_text_config(vocab_size: int, bos_token_id: int, eos_token_id: int) -> dict[str, Any]:
    """The tiny CLIP text encoder's config; the ids come from the tiny tokenizer."""
    return {
        **CLIP_VIT_L_14_TEXT,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "pad_token_id": eos_token_id,
        "projection_dim": 32,
        "vocab_size": vocab_size,
    }


# Words that get merges of their own; any other text still tokenizes, letter by letter, because
# the vocabulary holds all 256 byte symbols of CLIP's byte-level BPE.
TINY_WORDS = (
    "a an the of and in on at with by to for from is are this that it its my your our "
    "photo picture painting drawing image render art style portrait landscape city street forest "
    "sea ocean river lake beach mountain sky cloud clouds sun moon star stars night day light dark "
    "fire water rain snow storm wind thunder lightning tree trees flower flowers grass field desert "
    "dog cat bird birds horse fish man woman people child crowd face eyes "
    "music sound song drum drums guitar piano violin bass beat voice singing dance dancing "
    "concert party club car train plane engine bell clock "
    "red orange yellow green blue purple pink black white gray grey gold silver colorful "
    "bright neon glowing abstract beautiful old new big small high detailed realistic cinematic "
    "hd"
)

SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def bytes_to_unicode() -> list[str]:
    """GPT-2 / CLIP byte-level alphabet: one printable symbol for each of the 256 byte values."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def tiny_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and BPE merges of the tiny CLIP tokenizer.

    Layout follows CLIP's: byte symbols, the same with the end-of-word mark ``</w>``, the tokens
    made by the merges, then the two special tokens. Each word of ``TINY_WORDS`` gets a chain of
    left-to-right merges; BPE applies merges by rank, so a word whose letters an earlier word's merge
    grabs first may still come out in a few pieces (all in the vocabulary).
    """
    alphabet = bytes_to_unicode()
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet]
    merges: list[tuple[str, str]] = []
    known = set(tokens)
    for word in TINY_WORDS.split():
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        merged = pieces[0]
        for piece in pieces[1:]:
            merge = (merged, piece)
            merged += piece
            if merged not in known:
                merges.append(merge)
                tokens.append(merged)
                known.add(merged)
    tokens += list(SPECIAL_TOKENS)
    return {token: index for index, token in enumerate(tokens)}, merges


# --- registry --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """A model family: its component configs and what suits it at inference."""

    name: str
    unet: dict[str, Any]
    text_encoder: dict[str, Any]
    vae: dict[str, Any]
    taesd: dict[str, Any]
    scheduler: dict[str, Any]
    text_family: str
    # Hub repository whose tokenizer/ folder serves single-file checkpoints of this family
    # (None: the tiny tokenizer, built here).
    tokenizer_repo: str | None

    @property
    def model_channels(self) -> int:
        return self.unet["block_out_channels"][0]

    @property
    def cross_attention_dim(self) -> int:
        return self.unet["cross_attention_dim"]


def _tiny_text_encoder() -> dict[str, Any]:
    vocab, _ = tiny_vocab_and_merges()
    return tiny_text_config(len(vocab), vocab["<|startoftext|>"], vocab["<|endoftext|>"])


ARCHITECTURES: dict[str, Architecture] = {
    "sd15": Architecture(
        name="sd15",
        unet=SD15_UNET,
        text_encoder=CLIP_VIT_L_14_TEXT,
        vae=SD_VAE,
        taesd=TAESD,
        scheduler=SD15_SCHEDULER,
        text_family=CLIP_L14_FAMILY,
        tokenizer_repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
    ),
    "sd-turbo": Architecture(
        name="sd-turbo",
        unet=SD_TURBO_UNET,
        text_encoder=OPENCLIP_VIT_H_14_TEXT,
        vae=SD_VAE,
        taesd=TAESD,
        scheduler=SD_TURBO_SCHEDULER,
        text_family=OPENCLIP_H14_FAMILY,
        tokenizer_repo="stabilityai/sd-turbo",
    ),
    "tiny": Architecture(
        name="tiny",
        unet=TINY_UNET,
        text_encoder=_tiny_text_encoder(),
        vae=TINY_VAE,
        taesd=TINY_TAESD,
        scheduler=SD15_SCHEDULER,
        text_family=TINY_FAMILY,
        tokenizer_repo=None,
    ),
}


def architecture_fingerprint(arch: Architecture) -> str:
    """A short hash of everything that defines an architecture (tells a stale cached build)."""
    vocab, merges = tiny_vocab_and_merges() if arch.tokenizer_repo is None else ({}, [])
    blob = json.dumps(
        [arch.unet, arch.text_encoder, arch.vae, arch.taesd, arch.scheduler, vocab, merges], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
