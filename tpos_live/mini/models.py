"""The mini world's model stack: Stable Diffusion 1.x's classes at sizes two CPU cores train in minutes.

A 64 x 64 picture becomes 4 x 16 x 16 latents (a factor of 4, as the tiny stack's), conditions are
77 x 64, and the tokenizer knows the world's caption words whole. The autoencoder (``vae``) is trained on
the pictures first; the TAESD-class decoder (``taesd``) is distilled from it, as the real TAESD was from
SD's VAE; the text encoder and the UNet are trained together on the captions
(``tpos_live/training/world.py``). Built here untrained.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from tpos_live.diffusion.architectures import (
    SD15_SCHEDULER,
    SD15_UNET,
    SD_VAE,
    SPECIAL_TOKENS,
    TAESD,
    bytes_to_unicode,
)
from tpos_live.diffusion.stack import ModelStack
from tpos_live.mini import pictures
from tpos_live.mini.world import CONCEPTS, SCENES
from tpos_live.names import MINI_FAMILY

LATENT_FACTOR = 4  # 64 x 64 pictures, 16 x 16 latents
TEXT_WIDTH = 64

MINI_UNET: dict[str, Any] = {
    **SD15_UNET,
    "attention_head_dim": 4,
    "block_out_channels": [32, 64],
    "cross_attention_dim": TEXT_WIDTH,
    # Attention at 8 x 8 only: at 16 x 16 it cost half the training step, and the text's layers
    # (a background, an object's kind and place) are coarse enough for 8 x 8 cross-attention.
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "layers_per_block": 1,
    "sample_size": pictures.SIZE // LATENT_FACTOR,
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
}

MINI_VAE: dict[str, Any] = {
    **SD_VAE,
    "block_out_channels": [16, 32, 64],  # two halvings: a factor of 4
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": pictures.SIZE,
    "scaling_factor": 1.0,  # set after training, to bring the latents to unit spread as SD's 0.18215 does
    "up_block_types": ["UpDecoderBlock2D"] * 3,
}

MINI_TAESD: dict[str, Any] = {
    **TAESD,
    "decoder_block_out_channels": [32, 32, 32],  # each block keeps its input's width in diffusers' TAESD
    "encoder_block_out_channels": [32, 32, 32],
    "num_decoder_blocks": [2, 2, 1],
    "num_encoder_blocks": [1, 2, 2],
    "scaling_factor": 1.0,  # it reads the UNet's (scaled) latents, as SD's TAESD does
}

MINI_SCHEDULER: dict[str, Any] = {**SD15_SCHEDULER, "_class_name": "DDIMScheduler"}


def mini_words() -> str:
    """Every word of the world's captions ("night with fire", "a bell in the desert")."""
    phrases = [*(w for s in SCENES for w in s.words + s.places), *(w for c in CONCEPTS for w in c.words), "with"]
    return " ".join(sorted({word for phrase in phrases for word in phrase.split()}))


def mini_tokenizer() -> CLIPTokenizer:
    """CLIP's byte-level BPE with merges that make each of the world's words one token."""
    alphabet = bytes_to_unicode()
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet]
    merges: list[tuple[str, str]] = []
    for word in mini_words().split():
        pieces = _pieces_after(merges, [*word[:-1], word[-1] + "</w>"])
        while len(pieces) > 1:
            # ranked last, the new merge acts only where no earlier one does: earlier words keep theirs
            merges.append((pieces[0], pieces[1]))
            tokens.append(pieces[0] + pieces[1])
            pieces = _pieces_after(merges, pieces)
    vocab = {token: index for index, token in enumerate([*dict.fromkeys(tokens), *SPECIAL_TOKENS])}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def _pieces_after(merges: list[tuple[str, str]], pieces: list[str]) -> list[str]:
    """What BPE makes of ``pieces`` with ``merges``: the best-ranked adjacent pair merged, until none is left."""
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    while len(pieces) > 1:
        pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(pieces[:-1], pieces[1:], strict=True))]
        ranked = [(rank, i) for rank, i in pairs if rank is not None]
        if not ranked:
            break
        _, i = min(ranked)
        pieces = [*pieces[:i], pieces[i] + pieces[i + 1], *pieces[i + 2:]]
    return pieces


def mini_text_config(tokenizer: CLIPTokenizer) -> dict[str, Any]:
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.eos_token_id,
        "hidden_act": "quick_gelu",
        "hidden_size": TEXT_WIDTH,
        "intermediate_size": 2 * TEXT_WIDTH,
        "max_position_embeddings": 77,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "projection_dim": TEXT_WIDTH,
        "vocab_size": len(tokenizer),
    }


def untrained_mini_stack(seed: int) -> ModelStack:
    """The mini stack with freshly initialised weights (drawn from ``seed``; the global generator is left alone)."""
    tokenizer = mini_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**MINI_UNET)
        text_encoder = CLIPTextModel(CLIPTextConfig(**mini_text_config(tokenizer)))
        vae = AutoencoderKL(**MINI_VAE)
        taesd = AutoencoderTiny(**MINI_TAESD)
    return ModelStack(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, vae=vae, taesd=taesd,
                      scheduler_config=dict(MINI_SCHEDULER), name="mini (untrained)", random_weights=True,
                      text_family=MINI_FAMILY, default_steps=0, default_guidance=0.0)
