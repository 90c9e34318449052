"""The specs of a scene and of the audio conditioning (the other specs live beside the code they
configure; :mod:`tpos_live.session` gathers them all). Importable without torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tpos_live.names import MODES


@dataclass(frozen=True)
class ConditioningSpec:
    """The audio conditioning.

    Attributes:
        encoder: a TPoS checkpoint, ``"random"``, ``"clap"`` / ``"clap:FOLDER|REPO_ID"``; None: the default
            (see :mod:`tpos_live.conditioning.providers`).
        concepts: the concept bank TOML for CLAP (None: the bundled bank).
        clap_model: the CLAP model the app's conditioning picker offers (None: the default CLAP).
    """

    encoder: str | None = None
    concepts: Path | None = None
    clap_model: str | None = None


@dataclass(frozen=True)
class SceneSpec:
    """What the frames show and how they are made.

    Attributes:
        prompt, negative_prompt: the text condition and what to steer away from.
        init_image: start from this image instead of noise alone.
        mode: ``"fast"`` or ``"paper"`` (the presets of :class:`~tpos_live.config.RenderSettings`).
        overrides: the :class:`~tpos_live.config.RenderSettings` fields the user gave (None: not given);
            the rest come from the mode and, in fast mode, from the model (its steps and guidance).
    """

    prompt: str
    negative_prompt: str = ""
    init_image: Path | None = None
    mode: str = "fast"
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

    def given(self) -> dict[str, Any]:
        """The overrides that were given."""
        return {name: value for name, value in self.overrides.items() if value is not None}
