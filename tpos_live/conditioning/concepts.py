"""Concept banks for zero-shot conditioning: what each sound is, and what it should look like.

A concept pairs a description of a sound (read by CLAP's text tower) with a visual prompt (read by
the diffusion model's text encoder). A bank is a TOML file of ``[[concept]]`` tables::

    [[concept]]
    name = "rain"                                   # short, unique: shown in messages and the UI
    sound = "the sound of heavy rain falling"       # what CLAP compares the audio with
    prompt = "rain streaming down a window at night, city lights blurred"   # what SD draws

The default bank ships with the package (``default_concepts.toml`` beside this module).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tpos_live.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

DEFAULT_BANK_FILE = "default_concepts.toml"
CONCEPT_KEYS = ("name", "sound", "prompt")
MIN_CONCEPTS = 2  # the sound chooses between concepts: one alone would give a constant condition
_FORMAT_HINT = "a TOML file of [[concept]] tables, each with name, sound and prompt (see the default bank)"


@dataclass(frozen=True)
class Concept:
    """One entry of a bank.

    Attributes:
        name: short label, unique in its bank.
        sound: description of the sound, for CLAP's text tower (e.g. "the sound of heavy rain").
        prompt: visual prompt for the diffusion model (e.g. "rain on a window at night").
    """

    name: str
    sound: str
    prompt: str

    def __post_init__(self) -> None:
        for key in CONCEPT_KEYS:
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{key} must be a non-empty string, got {value!r}")


@dataclass(frozen=True)
class ConceptBank:
    """The concepts a zero-shot provider chooses between, and where they came from (for messages)."""

    concepts: tuple[Concept, ...]
    source: str

    def __post_init__(self) -> None:
        if len(self.concepts) < MIN_CONCEPTS:
            raise ValueError(f"a concept bank needs at least {MIN_CONCEPTS} concepts, "
                             f"got {len(self.concepts)}")
        names = [concept.name for concept in self.concepts]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"concept names must be unique; repeated: {', '.join(duplicates)}")

    def __len__(self) -> int:
        return len(self.concepts)

    @property
    def names(self) -> list[str]:
        return [concept.name for concept in self.concepts]

    @property
    def sounds(self) -> list[str]:
        return [concept.sound for concept in self.concepts]

    @property
    def prompts(self) -> list[str]:
        return [concept.prompt for concept in self.concepts]


def load_concepts(path: str | os.PathLike[str]) -> ConceptBank:
    """Read and check a concept bank file. Raises UserError naming the first problem and its place."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"concept bank '{path}' does not exist: give {_FORMAT_HINT}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"concept bank '{path}' cannot be read as UTF-8 text ({error}): "
                        f"give {_FORMAT_HINT}") from error
    return parse_concepts(text, source=str(path))


def default_concepts() -> ConceptBank:
    """The bank that ships with the package."""
    text = resources.files("tpos_live.conditioning").joinpath(DEFAULT_BANK_FILE).read_text(encoding="utf-8")
    return parse_concepts(text, source="the default bank")


def parse_concepts(text: str, source: str) -> ConceptBank:
    """A bank from TOML text; ``source`` names it in messages. Raises UserError when anything is off."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"concept bank '{source}' is not valid TOML ({error}): fix the file") from error
    unknown = sorted(set(document) - {"concept"})
    if unknown:
        raise UserError(f"concept bank '{source}' has unknown top-level key '{unknown[0]}': it must hold "
                        f"only [[concept]] tables (name, sound, prompt)")
    entries = document.get("concept")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"concept bank '{source}' has no [[concept]] tables: give {_FORMAT_HINT}")
    concepts = tuple(_concept(entry, number, source) for number, entry in enumerate(entries, start=1))
    try:
        return ConceptBank(concepts, source)
    except ValueError as error:
        raise UserError(f"concept bank '{source}': {error}") from error


def _concept(entry: Any, number: int, source: str) -> Concept:
    where = f"concept bank '{source}', concept {number}"
    if not isinstance(entry, dict):
        raise UserError(f"{where} is not a table: write each one as [[concept]] with name, sound and prompt")
    if isinstance(entry.get("name"), str):
        where += f" ('{entry['name']}')"
    unknown = sorted(set(entry) - set(CONCEPT_KEYS))
    if unknown:
        raise UserError(f"{where} has unknown key '{unknown[0]}': the keys are {', '.join(CONCEPT_KEYS)}")
    missing = [key for key in CONCEPT_KEYS if key not in entry]
    if missing:
        raise UserError(f"{where} lacks {', '.join(missing)}: each concept needs {', '.join(CONCEPT_KEYS)}")
    try:
        return Concept(**{key: entry[key] for key in CONCEPT_KEYS})
    except ValueError as error:
        raise UserError(f"{where}: {error}") from error
