"""Stacks with random weights: the tiny stack (tests, trying things) and full-size architectures (speed).

The tiny stack is built once, saved to a cache folder and loaded back through the same folder loader
as any diffusers model, so tests exercise the real path.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from tpos_live.diffusion.architectures import (
    ARCHITECTURES,
    Architecture,
    architecture_fingerprint,
    tiny_vocab_and_merges,
)
from tpos_live.diffusion.folders import METADATA_FILE, read_metadata, save_stack, write_json
from tpos_live.diffusion.models import TINY_SAMPLING
from tpos_live.diffusion.stack import ModelStack
from tpos_live.paths import cache_folder

TINY_SEED = 0


def build_tiny_stack(seed: int = 0) -> ModelStack:
    """The tiny stack: the classes of SD 1.x at toy sizes, random weights (fixed by ``seed``)."""
    stack = _build_random(ARCHITECTURES["tiny"], seed, default_steps=TINY_SAMPLING.steps,
                          default_guidance=TINY_SAMPLING.guidance)
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


def tiny_model_folder() -> Path:
    """The saved tiny stack, built on first use: ``$TPOS_LIVE_CACHE/tiny-sd`` (default cache root
    ``~/.cache/tpos-live``). Rebuilt when the tiny architecture has changed since it was saved.

    Built in a temporary folder next to it and renamed into place, so a reader never sees half a
    model and two processes building at once both end up with a complete one.
    """
    root = cache_folder()
    folder = root / "tiny-sd"
    fingerprint = architecture_fingerprint(ARCHITECTURES["tiny"]) + _tiny_init_tag()
    if read_metadata(folder).get("fingerprint") == fingerprint:
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".tiny-sd-build-") as scratch:
        built = Path(scratch) / "tiny-sd"
        save_stack(build_tiny_stack(seed=TINY_SEED), built)
        write_json(built / METADATA_FILE, {**read_metadata(built), "fingerprint": fingerprint})
        if folder.exists():  # stale: an older tiny architecture
            with contextlib.suppress(FileNotFoundError):  # another process moved it first
                folder.rename(Path(scratch) / "stale")
        try:
            built.rename(folder)
        except OSError:
            if read_metadata(folder).get("fingerprint") != fingerprint:
                raise  # not a concurrent build that got there first
    return folder


def _tiny_init_tag() -> str:
    return f"-x{TINY_CROSS_ATTENTION_GAIN:g}-t{TINY_TAESD_OUTPUT_GAIN:g}"


def tiny_tokenizer() -> CLIPTokenizer:
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
        tokenizer=tiny_tokenizer(),
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
