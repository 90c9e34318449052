"""A synthetic world small enough to train on a CPU: pictures of a scene and a sound object, captions, and
the objects' sounds. The one home of the scene and concept names (:data:`SCENES`, :data:`CONCEPTS`).

A picture (64 x 64 RGB) has two layers, as a TPoS render does: the **scene**, which the text prompt sets
(day sky, night, sea, desert), and the **sound object**, which the audio sets (rain, fire, bell, drums,
birds, siren). A caption names the scene, the object or both ("night", "fire", "night with fire", "a bell
in the desert"), so that text alone can ask for either layer. Each concept also has a sound: a clip of
:data:`CLIP_SECONDS`, more than one encoder window, at the encoder's default rate.

Everything is drawn from a seed: the same seed gives the same bytes. Item ``i`` of a seed uses its own
generator, ``default_rng((seed, i))``, so a subset can be drawn without the rest.
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import ImageDraw

from tpos_live.audio.spectrogram import SpectrogramConfig, segment_samples
from tpos_live.limits import SEED_LIMIT, SEED_RANGE
from tpos_live.mini import pictures, sounds

# The encoder's default front end (TPoSConfig's and train-encoder's sizes): its rate, and its window of
# N segments (5 x 78,848 samples, 8.94 s at 44.1 kHz).
_FRONT_END = SpectrogramConfig(kind="stft")
SAMPLE_RATE = _FRONT_END.sample_rate
WINDOW_SAMPLES = _FRONT_END.segments * segment_samples(_FRONT_END)
CLIP_SECONDS = 10.0  # a clip: one window and a second to spare, so that training can crop it at random
STORY_SEED = 0  # the seed of examples/story.wav
STORY_SECONDS = 5.0  # each concept's turn in the story
STORY_FADE_SECONDS = 0.05  # the crossfade between turns: no click at a change

SceneDraw = Callable[[np.random.Generator], np.ndarray]
ObjectDraw = Callable[[np.random.Generator, ImageDraw.ImageDraw], None]
Synth = Callable[[np.random.Generator, int, int], np.ndarray]


def _check_words(name: str, *groups: tuple[str, ...]) -> None:
    if not name or name != name.strip():
        raise ValueError(f"a name must be non-empty without outer spaces, got {name!r}")
    for group in groups:
        if not group or any(not word.strip() for word in group):
            raise ValueError(f"{name}: each word list needs at least one non-empty entry, got {group!r}")


@dataclass(frozen=True)
class Scene:
    """A background the text prompt asks for.

    Attributes:
        name: the scene's name (what the detector returns).
        words: how a caption names it on its own or before "with" ("night", "night with fire").
        places: how a caption names it after an object ("fire at night").
        draw: the background, a (64, 64, 3) float field (:mod:`tpos_live.mini.pictures`).
    """

    name: str
    words: tuple[str, ...]
    places: tuple[str, ...]
    draw: SceneDraw

    def __post_init__(self) -> None:
        _check_words(self.name, self.words, self.places)


@dataclass(frozen=True)
class Concept:
    """A sound object: what the audio asks for, with its picture layer and its sound.

    Attributes:
        name: the concept's name: the detector's answer.
        words: how a caption names it ("fire", "flames"); the first is its clips' label (:attr:`label`).
        draw: draws the object over a scene (:mod:`tpos_live.mini.pictures`).
        sound: synthesises ``n`` samples of it at a rate (:mod:`tpos_live.mini.sounds`).
    """

    name: str
    words: tuple[str, ...]
    draw: ObjectDraw
    sound: Synth

    def __post_init__(self) -> None:
        _check_words(self.name, self.words)

    @property
    def label(self) -> str:
        """The text its clips are aligned to: words the text encoder and the UNet learnt from captions
        ("a bell", not "bell", which no caption holds alone)."""
        return self.words[0]


DAY = Scene("day sky", ("day sky", "sky"), ("in the day sky", "under a blue sky"), pictures.day_sky)
NIGHT = Scene("night", ("night",), ("at night",), pictures.night)
SEA = Scene("sea", ("sea",), ("over the sea", "at sea"), pictures.sea)
DESERT = Scene("desert", ("desert",), ("in the desert",), pictures.desert)
SCENES: tuple[Scene, ...] = (DAY, NIGHT, SEA, DESERT)

RAIN = Concept("rain", ("rain",), pictures.rain, sounds.rain)
FIRE = Concept("fire", ("fire", "flames"), pictures.fire, sounds.fire)
BELL = Concept("bell", ("a bell",), pictures.bell, sounds.bell)
DRUMS = Concept("drums", ("drums",), pictures.drums, sounds.drums)
BIRDS = Concept("birds", ("birds",), pictures.birds, sounds.birds)
SIREN = Concept("siren", ("a siren",), pictures.siren, sounds.siren)
CONCEPTS: tuple[Concept, ...] = (RAIN, FIRE, BELL, DRUMS, BIRDS, SIREN)

SCENE_NAMES = tuple(scene.name for scene in SCENES)
CONCEPT_NAMES = tuple(concept.name for concept in CONCEPTS)
STORY_CONCEPTS = (RAIN, BELL, FIRE, BIRDS)  # the example's order: neighbours differ to eye and ear


def scene_named(name: str) -> Scene:
    """The scene called ``name``; KeyError naming the choices."""
    return _named(SCENES, name)


def concept_named(name: str) -> Concept:
    """The concept called ``name``; KeyError naming the choices."""
    return _named(CONCEPTS, name)


def _named(table: tuple[Scene, ...] | tuple[Concept, ...], name: str):
    for entry in table:
        if entry.name == name:
            return entry
    raise KeyError(f"{name!r} is not one of {', '.join(entry.name for entry in table)}")


def item_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of item ``index`` of ``seed``: independent of every other item's."""
    if not 0 <= seed < SEED_LIMIT or index < 0:
        raise ValueError(f"seed must lie in {SEED_RANGE} and index be at least 0, got {seed}, {index}")
    return np.random.default_rng((seed, index))


# --- pictures -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Picture:
    """One drawn picture: ``pixels`` (64, 64, 3) uint8, what it shows, and a caption of it."""

    pixels: np.ndarray
    scene: str
    concept: str
    caption: str

    def __post_init__(self) -> None:
        size = pictures.SIZE
        if self.pixels.shape != (size, size, 3) or self.pixels.dtype != np.uint8:
            raise ValueError(f"pixels must be ({size}, {size}, 3) uint8, got {self.pixels.dtype} {self.pixels.shape}")
        scene_named(self.scene), concept_named(self.concept)  # KeyError for a name not in the tables


def draw(scene: Scene, concept: Concept, rng: np.random.Generator) -> np.ndarray:
    """``concept`` over ``scene``, as a (64, 64, 3) uint8 array."""
    return pictures.compose(scene.draw(rng), lambda canvas: concept.draw(rng, canvas))


def caption(scene: Scene, concept: Concept, rng: np.random.Generator) -> str:
    """A caption of the scene alone, the object alone, or both (half the time), in the world's words."""
    scene_word, place = rng.choice(scene.words), rng.choice(scene.places)
    thing = rng.choice(concept.words)
    templates = (scene_word, thing, f"{scene_word} with {thing}", f"{thing} {place}")
    return str(templates[rng.integers(len(templates))])


def picture(seed: int, index: int) -> Picture:
    """Item ``index`` of ``seed``: the combinations of scene and concept in turn (so any run of 24 holds
    each once), drawn and captioned at random."""
    scene = SCENES[index % len(SCENES)]
    concept = CONCEPTS[(index // len(SCENES)) % len(CONCEPTS)]
    rng = item_rng(seed, index)
    return Picture(draw(scene, concept, rng), scene.name, concept.name, caption(scene, concept, rng))


OBJECT_EDGE = 12  # a pixel belongs to the object where it differs from the bare scene by more than this (0..255)


def object_mask(seed: int, index: int, shown: Picture) -> np.ndarray:
    """Where ``shown``, item ``index`` of ``seed``, shows its sound object: (64, 64) bool. Its bare scene
    is drawn again from the item's generator, which gives the same background (the object is drawn from
    the generator after it), and compared with the picture."""
    background = pictures.background_pixels(scene_named(shown.scene).draw(item_rng(seed, index)))
    return np.abs(shown.pixels.astype(np.int16) - background).max(axis=2) > OBJECT_EDGE


# --- sounds -------------------------------------------------------------------------------------------


def sound_clip(concept: Concept, rng: np.random.Generator, seconds: float = CLIP_SECONDS,
               rate: int = SAMPLE_RATE) -> np.ndarray:
    """``seconds`` of ``concept``'s sound at ``rate``: float32 mono, peak drawn in [0.5, 0.9]."""
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    raw = concept.sound(rng, round(seconds * rate), rate)
    peak = np.abs(raw).max()
    return (raw * (rng.uniform(0.5, 0.9) / peak if peak > 0 else 0.0)).astype(np.float32)


def clip(seed: int, index: int, concept: Concept) -> np.ndarray:
    """Clip ``index`` of ``seed`` for ``concept``: :data:`CLIP_SECONDS` at :data:`SAMPLE_RATE`."""
    return sound_clip(concept, item_rng(seed, index))


@dataclass(frozen=True)
class Turn:
    """One concept's stretch of a story, in seconds."""

    start: float
    end: float
    concept: str

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"a turn needs 0 <= start < end, got {self.start}, {self.end}")
        if self.concept not in CONCEPT_NAMES:
            raise ValueError(f"unknown concept {self.concept!r}: the world's are {', '.join(CONCEPT_NAMES)}")


def read_timeline(text: str) -> list[Turn]:
    """A story's timeline from its JSON text: a list of {"start", "end", "concept"} in seconds, in order and
    not overlapping (as ``scripts/make_mini_world.py --story`` writes it). ValueError says what is wrong."""
    try:
        turns = [Turn(float(item["start"]), float(item["end"]), str(item["concept"])) for item in json.loads(text)]
    except (json.JSONDecodeError, TypeError, KeyError) as error:
        raise ValueError(f"not a timeline (a JSON list of start, end, concept): {error}") from None
    if not turns:
        raise ValueError("the timeline has no turns")
    for before, after in zip(turns[:-1], turns[1:], strict=True):
        if after.start < before.end:
            raise ValueError(f"turns overlap or are out of order: {before.concept} ends at {before.end:g} s, "
                             f"{after.concept} starts at {after.start:g} s")
    return turns


def story(seed: int = STORY_SEED, concepts: tuple[Concept, ...] = STORY_CONCEPTS,
          seconds: float = STORY_SECONDS) -> tuple[np.ndarray, list[Turn]]:
    """Concepts following each other, ``seconds`` each, crossfaded: float32 mono at :data:`SAMPLE_RATE`,
    and its timeline."""
    turn = round(seconds * SAMPLE_RATE)
    fade = round(STORY_FADE_SECONDS * SAMPLE_RATE)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    out = np.zeros(turn * len(concepts) + fade, dtype=np.float32)
    for index, concept in enumerate(concepts):
        # Each turn runs one fade longer and overlaps the next by it, so the sum keeps its level.
        part = sound_clip(concept, item_rng(seed, index), (turn + fade) / SAMPLE_RATE)
        part[:fade] *= ramp if index else 1.0
        part[-fade:] *= ramp[::-1]
        out[index * turn : index * turn + part.size] += part
    timeline = [Turn(i * seconds, (i + 1) * seconds, c.name) for i, c in enumerate(concepts)]
    return out[: turn * len(concepts)], timeline


def wav_bytes(mono: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """``mono`` (float in [-1, 1]) as a 16-bit PCM WAV file's bytes."""
    if mono.ndim != 1:
        raise ValueError(f"wav_bytes takes mono samples, got shape {mono.shape}")
    pcm = np.rint(np.clip(mono, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


assert CLIP_SECONDS * SAMPLE_RATE >= WINDOW_SAMPLES, "a clip must hold one encoder window"
assert len(SCENE_NAMES) == len(set(SCENE_NAMES)), "scene names must be unique"
assert len(CONCEPT_NAMES) == len(set(CONCEPT_NAMES)), "concept names must be unique"
