"""The specs of a scene and of the audio conditioning (the other specs live beside the code they
configure; :mod:`tpos_live.session` gathers them all). Importable without torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tpos_live.names import IMG2IMG_PRESETS, MODES

CLAP_ENCODER = "clap"  # the encoder name of the CLAP concept bank ("clap:FOLDER|REPO_ID": another CLAP)


def concepts_without_clap(encoder: str) -> str:
    """Why a concept bank does nothing with ``encoder`` (one that is no CLAP bank)."""
    return f"--concepts is for the CLAP concept bank but the encoder is '{encoder}': drop --concepts, or use " \
           "--encoder clap"


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

    def __post_init__(self) -> None:
        if self.concepts is not None and self.encoder is not None \
                and self.encoder.split(":")[0] != CLAP_ENCODER:
            raise ValueError(concepts_without_clap(self.encoder))


@dataclass(frozen=True)
class SceneSpec:
    """What the frames show and how they are made.

    Attributes:
        prompt, negative_prompt: the text condition and what to steer away from.
        init_image: start from this image instead of noise alone.
        mode: ``"fast"`` or ``"paper"`` (the presets of :class:`~tpos_live.config.RenderSettings`).
        overrides: the :class:`~tpos_live.config.RenderSettings` fields the user gave (None: not given);
            the rest come from the mode and, in fast mode, from the model (its steps and guidance).
        edit_prompt: a text edit concept beside the audio's (the paper's joint text + audio
            conditioning): its encoding is guided like the audio condition, masked and summed as SEGA
            sums concepts, at the settings' ``edit_scale``.
        img2img_preset: settings for an init image (``"official"``: the official img2img script's, see
            :data:`tpos_live.config.IMG2IMG_PRESETS`), between the mode's and ``overrides``.
    """

    prompt: str
    negative_prompt: str = ""
    init_image: Path | None = None
    mode: str = "fast"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    edit_prompt: str | None = None
    img2img_preset: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.edit_prompt is not None and not self.edit_prompt.strip():
            raise ValueError("the edit prompt is empty: give a text, or leave it out")
        if self.img2img_preset is not None and self.img2img_preset not in IMG2IMG_PRESETS:
            raise ValueError(f"img2img preset must be one of {IMG2IMG_PRESETS}, got {self.img2img_preset!r}")
        if self.init_image is None and (self.img2img_preset is not None or self.given().get("strength") is not None):
            raise ValueError("--strength and --img2img-preset are for an init image: give --init-image too")
        if self.edit_prompt is None and self.given().get("edit_scale") is not None:
            raise ValueError("--edit-scale scales the --edit-prompt concept: give --edit-prompt TEXT too")

    def given(self) -> dict[str, Any]:
        """The overrides that were given."""
        return {name: value for name, value in self.overrides.items() if value is not None}
