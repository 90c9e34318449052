"""The diffusion model's text side: how a prompt becomes a condition, and the text space that the audio
conditioning (``tpos_live.conditioning``) writes its conditions into."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from tpos_live.diffusion.stack import ModelStack

TEXT_TOKENS = 77  # CLIP's context length: every condition has this many token rows


@dataclass(frozen=True)
class TextSpace:
    """What a provider needs from the diffusion model's text encoder.

    Attributes:
        empty: ``(77, D)`` text-encoder output for the empty prompt ``""``. Row 0 is the start token.
        family: which text encoder made it (one of :data:`~tpos_live.names.TEXT_FAMILIES`).
    """

    empty: torch.Tensor
    family: str

    def __post_init__(self) -> None:
        if self.empty.ndim != 2 or self.empty.shape[0] != TEXT_TOKENS:
            raise ValueError(f"empty must be ({TEXT_TOKENS}, D), got {tuple(self.empty.shape)}")
        if not self.family:
            raise ValueError("family must name the text encoder")

    @property
    def dim(self) -> int:
        """Width D of the text space (768 for SD 1.x, 1024 for SD 2.x)."""
        return int(self.empty.shape[-1])

    def with_start_token(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(K, 76, D)`` audio tokens -> ``(K, 77, D)`` float32 conditions: the empty prompt's start
        token, then the tokens (how TPoS places its MAP output). On ``empty``'s device."""
        if tokens.ndim != 3 or tokens.shape[1:] != (TEXT_TOKENS - 1, self.dim):
            raise ValueError(
                f"expected tokens of shape (K, {TEXT_TOKENS - 1}, {self.dim}), got {tuple(tokens.shape)}"
            )
        start = self.empty[:1].to(torch.float32).expand(tokens.shape[0], 1, self.dim)
        return torch.cat([start, tokens.to(device=self.empty.device, dtype=torch.float32)], dim=1)


@torch.inference_mode()
def encode_prompt(stack: ModelStack, text: str) -> torch.Tensor:
    """The text encoder's output (1, 77, D) for ``text``, in the UNet's dtype: the one way a prompt (the
    scene's, the negative one, a CLAP concept's visual prompt) becomes a condition."""
    tokenizer = stack.tokenizer
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    hidden = stack.text_encoder(ids.to(stack.device))[0]
    return hidden.to(stack.unet.dtype)


def text_space_of(stack: ModelStack) -> TextSpace:
    """The empty prompt's encoding (float32, on the CPU), which audio providers build conditions from."""
    return TextSpace(empty=encode_prompt(stack, "")[0].float().cpu(), family=stack.text_family)
