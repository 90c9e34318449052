"""Choosing the audio conditioning for a model stack, and saying plainly what was chosen."""

from __future__ import annotations

from collections.abc import Callable

import torch

from tpos_live.conditioning.base import ConditionProvider, TextSpace
from tpos_live.conditioning.checkpoint import load_tpos, random_tpos
from tpos_live.conditioning.tpos_encoder import TPoSConfig
from tpos_live.diffusion.loading import ModelStack
from tpos_live.errors import UserError

RANDOM_ENCODER_SEED = 0


def load_provider(encoder: str | None, stack: ModelStack, text_space: TextSpace,
                  say: Callable[[str], None] = print) -> ConditionProvider:
    """The provider named by ``encoder``: a TPoS checkpoint path or "random".

    None means the stack's default: a random encoder for random-weight stacks (the user asked for
    random weights already), otherwise an error that says how to get an encoder.
    """
    if encoder is None and not stack.random_weights:
        raise UserError("no audio encoder given: pass --encoder PATH (a TPoS checkpoint, name.safetensors "
                        "beside name.json) or --encoder random to try an untrained encoder")
    if encoder in (None, "random"):
        config = TPoSConfig(embed_dim=stack.cross_attention_dim, text_family=stack.text_family)
        provider = random_tpos(config, seed=RANDOM_ENCODER_SEED)
        match_token_spread(provider.map_model, text_space)
        say("warning: the audio encoder has RANDOM weights (untrained): conditions change with the sound "
            "but carry no learned meaning")
    else:
        provider = load_tpos(encoder, device=stack.device)
    _check_fits(provider, stack, say)
    return provider


def _check_fits(provider: ConditionProvider, stack: ModelStack, say: Callable[[str], None]) -> None:
    if provider.embed_dim != stack.cross_attention_dim:
        raise UserError(f"audio encoder '{provider.name}' makes {provider.embed_dim}-d conditions but the model "
                        f"'{stack.name}' expects {stack.cross_attention_dim}-d: use an encoder trained for this "
                        f"model's text encoder, or a model of the encoder's family")
    family = getattr(provider, "text_family", stack.text_family)
    if family != stack.text_family:
        say(f"warning: audio encoder '{provider.name}' was aligned to {family}, the model uses "
            f"{stack.text_family}: conditions may not mean what they should")


def match_token_spread(map_model: torch.nn.Module, text_space: TextSpace, rounds: int = 3) -> None:
    """Scale a random MAP so its tokens spread like the text encoder's.

    A trained MAP learns the text tokens' scale from its MSE target; a random one emits tokens ~40x
    smaller, which puts every sound at nearly the same condition. Its inputs are unit vectors
    (N * alpha_n * s_n with alpha_n ~ 1/N), so the spread is measured on seeded random unit vectors;
    the last layer sits before a GELU, hence a few rounds.
    """
    target = float(text_space.empty[1:].float().std())
    generator = torch.Generator().manual_seed(0)
    probe = torch.nn.functional.normalize(torch.randn(16, map_model.embed_dim, generator=generator), dim=-1)
    last = map_model.linear2
    with torch.no_grad():
        for _ in range(rounds):
            spread = float(map_model(probe.to(last.weight.device, last.weight.dtype)).float().std())
            last.weight.mul_(target / spread)
            last.bias.mul_(target / spread)
