"""The scene panel's conditioning source: the TPoS encoder or the CLAP concept bank.

Each choice names what ``load_provider`` loads (a TPoS checkpoint, ``random``, or ``clap:MODEL``); a
choice that cannot be had here (no TPoS encoder set for this model's text encoder) is offered
disabled, with the reason. Loading runs off the GUI thread (see ``tasks.BackgroundJob``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tpos_live.conditioning.base import ConditionProvider, TextSpace
from tpos_live.conditioning.clap import DEFAULT_CLAP_MODEL
from tpos_live.conditioning.providers import CLAP, HOW_TO_SET_ONE, default_tpos_encoder, load_provider
from tpos_live.diffusion.stack import ModelStack
from tpos_live.errors import UserError
from tpos_live.reporting import Reporter

TPOS, CLAP_BANK = "tpos", "clap"


@dataclass(frozen=True)
class ConditioningChoice:
    """One entry of the picker.

    Attributes:
        kind: ``"tpos"`` or ``"clap"``.
        label: what the picker shows.
        encoder: ``load_provider``'s name for it; None when it cannot be had here.
        why_not: why it cannot (shown as the entry's tooltip and when picked).
    """

    kind: str
    label: str
    encoder: str | None
    why_not: str = ""


def conditioning_choices(encoder: str | None, stack: ModelStack,
                         clap_model: str | None = None) -> tuple[ConditioningChoice, ConditioningChoice]:
    """The TPoS and CLAP choices for a session started with ``--encoder encoder`` on ``stack`` (the CLAP
    choice loads ``clap_model``, default ``DEFAULT_CLAP_MODEL``, unless the session started on CLAP)."""
    clap_model = clap_model or DEFAULT_CLAP_MODEL
    named_clap = encoder is not None and (encoder == CLAP or encoder.startswith(CLAP + ":"))
    clap = encoder if named_clap else f"{CLAP}:{clap_model}"
    clap_choice = ConditioningChoice(CLAP_BANK, f"CLAP concept bank ({clap.partition(':')[2] or DEFAULT_CLAP_MODEL})",
                                     clap)
    if encoder is not None and not named_clap:
        return _tpos_choice(encoder), clap_choice
    try:
        default, origin = default_tpos_encoder(stack)
    except UserError as error:
        return ConditioningChoice(TPOS, "TPoS encoder (unavailable)", None, str(error)), clap_choice
    if default is not None:
        return _tpos_choice(default), clap_choice
    why = f"{origin}: {HOW_TO_SET_ONE}, or start the app with --encoder CHECKPOINT"
    return ConditioningChoice(TPOS, "TPoS encoder (none set)", None, why), clap_choice


def kind_of(provider: ConditionProvider) -> str:
    """Which choice a provider is."""
    return CLAP_BANK if provider.name.startswith(CLAP) else TPOS


def load_conditioning(choice: ConditioningChoice, stack: ModelStack, text_space: TextSpace, report: Reporter,
                      concepts: Path | None = None) -> ConditionProvider:
    """Load a choice's provider (slow: weights from disk or the hub cache). UserError says why it failed."""
    if choice.encoder is None:
        raise UserError(choice.why_not)

    def say(message: str) -> None:
        report("warning" if message.startswith("warning") else "info", message.removeprefix("warning: "))

    return load_provider(choice.encoder, stack, text_space, say=say, progress=False,
                         concepts=concepts if choice.kind == CLAP_BANK else None)


def _tpos_choice(encoder: str) -> ConditioningChoice:
    name = "random weights" if encoder == "random" else Path(encoder).stem
    return ConditioningChoice(TPOS, f"TPoS encoder ({name})", encoder)
