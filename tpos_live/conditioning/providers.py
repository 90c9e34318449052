"""Choosing the audio conditioning for a model stack, and saying plainly what was chosen.

``--encoder`` names a TPoS checkpoint, ``random`` (an untrained TPoS encoder), or ``clap`` /
``clap:MODEL`` (the zero-shot concept bank, with CLAP from a folder or hub id; default
``laion/clap-htsat-unfused``). Without one, the first that applies:

1. ``--concepts`` was given: the CLAP concept bank (the concepts choose it);
2. the TPoS encoder saved in the model's own folder (``encoder.safetensors``: ``--model mini`` has one),
   trained against that very text encoder;
3. the default TPoS encoder recorded for the model's text encoder (``set_default_encoder``, which the
   import and training commands call);
4. a random-weight model (``--model tiny``, speed tests): a random TPoS encoder, as the user asked for
   random weights already and CLAP would need a download;
5. otherwise the CLAP concept bank, saying so in one line.

Default encoders are recorded per text family (a checkpoint aligned to SD 1.x's CLIP does not serve
sd-turbo) in ``$TPOS_LIVE_CONFIG/default_encoders.json`` (default folder ``$XDG_CONFIG_HOME/tpos-live``,
else ``~/.config/tpos-live``): settings, not a cache, so clearing caches keeps them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from tpos_live.conditioning.base import ConditionProvider, TextSpace
from tpos_live.conditioning.checkpoint import checkpoint_paths, load_tpos, random_tpos
from tpos_live.conditioning.clap import DEFAULT_CLAP_MODEL, ClapConceptProvider, ClapSettings, load_clap
from tpos_live.conditioning.concepts import default_concepts, load_concepts
from tpos_live.conditioning.tpos_encoder import TPoSConfig
from tpos_live.diffusion.stack import ModelStack
from tpos_live.diffusion.text import encode_prompt
from tpos_live.errors import UserError
from tpos_live.fileio import write_text_atomically
from tpos_live.paths import settings_folder
from tpos_live.specs import CLAP_ENCODER, concepts_without_clap

RANDOM_ENCODER_SEED = 0
CLAP = CLAP_ENCODER
DEFAULTS_FILE = "default_encoders.json"
DEFAULTS_FORMAT = "tpos-live-default-encoders"
HOW_TO_SET_ONE = "`tpos-live import-tpos` or `tpos-live train-encoder` sets one"

PromptEncoder = Callable[[str], torch.Tensor]


def load_provider(encoder: str | None, stack: ModelStack, text_space: TextSpace,
                  say: Callable[[str], None] = print, *, concepts: str | os.PathLike[str] | None = None,
                  prompt_encoder: PromptEncoder | None = None, clap_settings: ClapSettings | None = None,
                  progress: bool = True) -> ConditionProvider:
    """The provider named by ``encoder`` (see the module docstring for the names and the default).

    Args:
        concepts: a concept bank TOML file for the CLAP provider (None: the default bank).
        prompt_encoder: prompt -> ``(1, 77, D)`` text-encoder output for the CLAP concepts' visual
            prompts; pass the renderer's ``encode_prompt``. None: the stack's own text encoder, encoded
            the same way.
        clap_settings: the CLAP provider's windows, temperature and top k (None: the defaults).
        progress: show download bars when CLAP weights are fetched.
    """
    reason = None
    if encoder is None:
        encoder, reason = _default_encoder(stack, concepts, say)
    if encoder == CLAP or encoder.startswith(CLAP + ":"):
        provider = _clap_provider(encoder, stack, concepts, prompt_encoder, clap_settings, progress)
        bank = provider.bank
        say(f"audio conditioning: CLAP concept bank, {len(bank)} concepts from {bank.source} "
            f"({provider.name})" + (f"; {reason}" if reason else ""))
    elif concepts is not None:
        raise UserError(concepts_without_clap(encoder))
    elif encoder == "random":
        config = TPoSConfig(embed_dim=stack.cross_attention_dim, text_family=stack.text_family)
        provider = random_tpos(config, seed=RANDOM_ENCODER_SEED, device=stack.device)
        match_token_spread(provider.map_model, text_space)
        say("warning: the audio encoder has RANDOM weights (untrained): conditions change with the sound "
            "but carry no learned meaning")
    else:
        provider = load_tpos(encoder, device=stack.device)
    _check_fits(provider, stack, say)
    return provider


def stack_prompt_encoder(stack: ModelStack) -> PromptEncoder:
    """prompt -> ``(1, 77, D)``: the stack's tokenizer and text encoder, as ``TPoSRenderer.encode_prompt``."""
    return partial(encode_prompt, stack)


# --- default encoders ------------------------------------------------------------------------------


def set_default_encoder(path: str | os.PathLike[str]) -> str:
    """Make the TPoS checkpoint at ``path`` the default encoder for its text family; returns the family.

    Records the checkpoint's absolute path (the weights stay where they are). Raises UserError when
    its files are missing, its config is unreadable, or it holds random weights.
    """
    weights_path, config_path = checkpoint_paths(path)
    for file in (config_path, weights_path):
        if not file.is_file():
            raise UserError(f"cannot make '{path}' the default encoder: '{file}' does not exist")
    try:
        document = json.loads(config_path.read_text())
        family, random_weights = document["text_family"], document["random_weights"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"cannot make '{path}' the default encoder: '{config_path}' is not a TPoS encoder "
                        f"config ({error})") from error
    if not isinstance(family, str) or not family:
        raise UserError(f"cannot make '{path}' the default encoder: '{config_path}' names no text family")
    if random_weights is not False:
        raise UserError(f"'{path}' holds random weights: only a trained or imported encoder can be the "
                        f"default")
    encoders = _read_defaults()
    encoders[family] = str(weights_path.resolve())
    _write_defaults(encoders)
    return family


def default_encoder(text_family: str) -> Path | None:
    """The default TPoS checkpoint (its .safetensors) for ``text_family``, or None when none is set.

    Raises UserError when the recorded checkpoint has gone, saying how to set another.
    """
    recorded = _read_defaults().get(text_family)
    if recorded is None:
        return None
    weights_path, config_path = checkpoint_paths(recorded)
    if not (weights_path.is_file() and config_path.is_file()):
        raise UserError(f"the default audio encoder for {text_family}, '{recorded}' (recorded in "
                        f"{settings_folder() / DEFAULTS_FILE}), no longer exists: pass --encoder, or "
                        f"{HOW_TO_SET_ONE} again")
    return weights_path


def default_tpos_encoder(stack: ModelStack) -> tuple[str | None, str]:
    """The TPoS encoder ``stack`` gets when none is named (steps 2-4 of the module docstring), as
    ``(its load_provider name, where it comes from)``, or ``(None, why there is none)`` (then CLAP serves).

    Raises UserError when a recorded default has gone (see ``default_encoder``).
    """
    if stack.encoder is not None:
        return str(stack.encoder), "saved with the model"
    recorded = default_encoder(stack.text_family)
    if recorded is not None:
        return str(recorded), f"the default for {stack.text_family}"
    if stack.random_weights:
        return "random", "the model has random weights"
    return None, f"no TPoS encoder is set for {stack.text_family}"


def _default_encoder(stack: ModelStack, concepts: str | os.PathLike[str] | None,
                     say: Callable[[str], None]) -> tuple[str, str | None]:
    """The encoder to use when none was named, and why (for the CLAP line), as the module docstring says."""
    if concepts is not None:
        return CLAP, None
    encoder, origin = default_tpos_encoder(stack)
    if encoder is None:
        return CLAP, f"{origin} ({HOW_TO_SET_ONE})"
    if encoder != "random":  # the random encoder announces itself with a warning
        say(f"audio encoder: {encoder} ({origin})")
    return encoder, None


def _read_defaults() -> dict[str, str]:
    path = settings_folder() / DEFAULTS_FILE
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text())
        encoders = document["encoders"] if document.get("format") == DEFAULTS_FORMAT else None
    except (OSError, ValueError, KeyError, AttributeError) as error:
        raise UserError(f"'{path}' is not readable ({error}): delete it, then {HOW_TO_SET_ONE} "
                        f"again") from error
    if not isinstance(encoders, dict) or not all(isinstance(v, str) for v in encoders.values()):
        raise UserError(f"'{path}' is not a tpos-live default encoder file: delete it, then "
                        f"{HOW_TO_SET_ONE} again")
    return encoders


def _write_defaults(encoders: dict[str, str]) -> None:
    """Write the defaults file via a temporary file and a rename: a reader never sees half of it."""
    path = settings_folder() / DEFAULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"format": DEFAULTS_FORMAT, "format_version": 1, "encoders": dict(sorted(encoders.items()))}
    write_text_atomically(path, json.dumps(document, indent=2) + "\n")


# --- building providers ----------------------------------------------------------------------------


def _clap_provider(encoder: str, stack: ModelStack, concepts: str | os.PathLike[str] | None,
                   prompt_encoder: PromptEncoder | None, settings: ClapSettings | None,
                   progress: bool) -> ClapConceptProvider:
    source = encoder.partition(":")[2] or DEFAULT_CLAP_MODEL
    bank = load_concepts(concepts) if concepts is not None else default_concepts()
    parts = load_clap(source, progress=progress)
    return ClapConceptProvider(parts, bank, prompt_encoder or stack_prompt_encoder(stack), settings,
                               name=f"clap:{source}", text_family=stack.text_family, device=stack.device)


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
