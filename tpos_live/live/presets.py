"""Scenes saved as TOML presets: the prompt, the seed and the knobs, applied to a running engine.

    [scene]
    name = "beach"
    prompt = "a photo of a beautiful beach with a blue sky"
    negative_prompt = ""
    seed = 42

    [guidance]
    text = 1.0
    audio = 7.0
    ...

Applying a preset changes the engine's control in one step; the engine crossfades to the new scene
when it is ready (at once if it was prefetched: see ``LiveEngine.prefetch`` and :meth:`Preset.state_after`),
so there is no black frame.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from tpos_live.errors import UserError
from tpos_live.fileio import write_text_atomically
from tpos_live.limits import SEED_LIMIT, SEED_RANGE
from tpos_live.live.control import MAX_PROMPT_CHARS, ControlState, LiveControl
from tpos_live.live.knobs import GUIDANCE_KNOBS, check_guidance

PRESET_SUFFIX = ".toml"


@dataclass(frozen=True)
class Preset:
    """One scene.

    Attributes:
        name: shown in the preset list; also the file name (made safe).
        prompt, negative_prompt, seed: what makes the scene.
        guidance: ``LiveControl.set_guidance`` keywords (``audio``, ``text``, ``threshold``, ...);
            knobs left out keep their current values when applied.
    """

    name: str
    prompt: str
    negative_prompt: str = ""
    seed: int = 42
    guidance: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a preset needs a name")
        for text in (self.prompt, self.negative_prompt):
            if not isinstance(text, str) or len(text) > MAX_PROMPT_CHARS:
                raise ValueError(f"prompts must be text of at most {MAX_PROMPT_CHARS} characters")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be an integer in {SEED_RANGE}, got {self.seed!r}")
        check_guidance(self.guidance)  # names and ranges of the knob table

    @classmethod
    def from_control(cls, name: str, control: LiveControl) -> Preset:
        """The scene a running engine shows now."""
        state = control.state()
        guidance = {name: float(getattr(state.settings, knob.setting)) for name, knob in GUIDANCE_KNOBS.items()}
        return cls(name, state.prompt, state.negative_prompt, state.settings.seed, guidance)

    def apply(self, control: LiveControl) -> None:
        """Switch the engine to this scene, all of it at once. Raises ValueError for a knob out of the
        engine's range, changing nothing."""
        control.set_scene(self.prompt, self.negative_prompt, self.seed, self.guidance)

    def state_after(self, state: ControlState) -> ControlState:
        """What ``state`` becomes when this preset is applied (to prefetch its scene); ValueError as apply."""
        return state.with_scene(self.prompt, self.negative_prompt, self.seed, self.guidance)


def preset_file(folder: Path, name: str) -> Path:
    """The file a preset named ``name`` lives in (the name with unsafe characters replaced)."""
    stem = re.sub(r"[^\w\- ]+", "_", name).strip() or "preset"
    return folder / f"{stem}{PRESET_SUFFIX}"


def save_preset(preset: Preset, folder: Path) -> Path:
    """Write ``preset`` as TOML into ``folder`` (created if needed); returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = preset_file(folder, preset.name)
    lines = ["[scene]", f"name = {_toml_string(preset.name)}", f"prompt = {_toml_string(preset.prompt)}",
             f"negative_prompt = {_toml_string(preset.negative_prompt)}", f"seed = {preset.seed}", "",
             "[guidance]"]
    lines += [f"{name} = {float(value)!r}" for name, value in sorted(preset.guidance.items())]
    try:
        write_text_atomically(path, "\n".join(lines) + "\n")
    except OSError as error:
        raise UserError(f"cannot write the preset {path} ({error.strerror}): pick a writable presets folder") from None
    return path


def load_preset(path: Path) -> Preset:
    """Read a preset file; UserError saying what is wrong with it."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        scene = data.get("scene")
        if not isinstance(scene, dict) or "prompt" not in scene:
            raise ValueError("it has no [scene] table with a prompt")
        guidance = data.get("guidance", {})
        if not isinstance(guidance, dict):
            raise ValueError("[guidance] must be a table")
        known = {f.name for f in fields(Preset)} - {"guidance"}
        return Preset(**{k: v for k, v in scene.items() if k in known} | {"name": scene.get("name", path.stem)},
                      guidance=guidance)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError, TypeError) as error:
        raise UserError(f"the preset {path} cannot be used ({error}): fix or delete it") from None


def list_presets(folder: Path) -> list[Path]:
    """The preset files in ``folder``, by name."""
    return sorted(folder.glob(f"*{PRESET_SUFFIX}")) if folder.is_dir() else []


def _toml_string(text: str) -> str:
    # JSON's string escapes (\", \\, \n, \uXXXX, ...) are all valid in a TOML basic string.
    return json.dumps(text, ensure_ascii=False)
