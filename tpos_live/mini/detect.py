"""A deterministic detector of the mini world's two layers in a frame: which scene, which sound object.

Each pixel is sorted by its hue, saturation and value into the colour classes the layers are drawn in
(:mod:`tpos_live.mini.pictures`): the scenes are pale or dark fields, the objects saturated and bright,
and no two share a hue band. The **scene** is the class covering most of the frame (an object covers
less than half of it); the **object** the class with the most pixels among the objects', where a siren
counts only as far as both its red and its blue halves show (its red alone would read as fire). Either
answer is None when unsure: too few pixels of any class, or a runner-up too close.

Accuracy on freshly drawn pictures of held-out seeds (:func:`measure`), 1000 pictures of seed 1,000,000,
reproduced by ``python scripts/make_mini_world.py --measure 1000``: scene 100.0 %, object 100.0 %, none
unsure. On the same pictures blurred as a soft decode might be (4x reduced and enlarged again, bilinear):
scene 100.0 %, object 99.9 % (0.1 % unsure: a siren's red half bled into desert sand).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tpos_live.mini import world

MIN_SCENE_SHARE = 0.1  # a scene must cover this share of the frame (its classes exclude each other)
MIN_OBJECT_PIXELS = 60  # an object must show this many pixels (1.5 % of 64 x 64)
MAX_OBJECT_SHARE = 0.6  # an object over more of the frame than this is no object on a scene (a flat grey, say)
RUNNER_UP = 0.7  # unsure when the second-best class reaches this share of the best's count
MEASURE_SEED = 1_000_000  # held out: far from the seeds a world is made with


@dataclass(frozen=True)
class HSV:
    """A frame's hue (degrees, [0, 360)), saturation and value ([0, 1]), each (H, W) float."""

    hue: np.ndarray
    sat: np.ndarray
    val: np.ndarray

    @classmethod
    def of(cls, frame: np.ndarray) -> HSV:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"a frame is (H, W, 3) uint8, got {frame.dtype} {frame.shape}")
        rgb = frame.astype(np.float64) / 255.0
        top, bottom = rgb.max(axis=2), rgb.min(axis=2)
        spread = top - bottom
        safe = np.where(spread > 0, spread, 1.0)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        hue = np.select([top == r, top == g], [(g - b) / safe % 6.0, (b - r) / safe + 2.0], (r - g) / safe + 4.0)
        sat = np.where(top > 0, spread / np.where(top > 0, top, 1.0), 0.0)
        return cls(np.where(spread > 0, hue * 60.0, 0.0), sat, top)

    def band(self, hue: tuple[float, float], sat: tuple[float, float] = (0.0, 1.0),
             val: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
        """Pixels within a hue band (degrees; ``(340, 380)`` wraps through red) and the ranges."""
        h = np.where(self.hue < hue[0], self.hue + 360.0, self.hue)
        return ((h >= hue[0]) & (h <= hue[1]) & (self.sat >= sat[0]) & (self.sat <= sat[1])
                & (self.val >= val[0]) & (self.val <= val[1]))

    def neutral(self, sat: float, val: tuple[float, float]) -> np.ndarray:
        """Greys and whites: pixels of at most ``sat`` saturation within a value range."""
        return (self.sat <= sat) & (self.val >= val[0]) & (self.val <= val[1])


# The scenes' colours, a little wider than the ranges they are drawn from so that texture stays inside.
_SCENE_PIXELS = {
    world.DAY.name: lambda p: p.band((190.0, 222.0), (0.15, 0.72), (0.68, 1.0)),
    world.NIGHT.name: lambda p: p.band((205.0, 270.0), (0.3, 1.0), (0.0, 0.32)),
    world.SEA.name: lambda p: p.band((165.0, 200.0), (0.5, 1.0), (0.2, 0.78)),
    world.DESERT.name: lambda p: p.band((24.0, 48.0), (0.2, 0.66), (0.6, 1.0)),
}

_RED = ((338.0, 372.0), (0.7, 1.0), (0.5, 1.0))
_BLUE = ((205.0, 245.0), (0.75, 1.0), (0.5, 1.0))


def _siren(p: HSV) -> int:
    """Both halves or nothing: the larger half counts only as far as the smaller one shows."""
    red, blue = int(p.band(*_RED).sum()), int(p.band(*_BLUE).sum())
    return 2 * min(red, blue)


# How many pixels of each object's colours a frame shows.
_OBJECT_PIXELS = {
    world.RAIN.name: lambda p: int((p.neutral(0.2, (0.75, 1.0)) | p.neutral(0.12, (0.35, 0.75))).sum()),
    world.FIRE.name: lambda p: int(p.band((0.0, 42.0), (0.7, 1.0), (0.6, 1.0)).sum()),
    world.BELL.name: lambda p: int(p.band((43.0, 66.0), (0.6, 1.0), (0.55, 1.0)).sum()),
    world.DRUMS.name: lambda p: int(p.band((275.0, 332.0), (0.5, 1.0), (0.5, 1.0)).sum()),
    world.BIRDS.name: lambda p: int(p.band((75.0, 140.0), (0.5, 1.0), (0.45, 1.0)).sum()),
    world.SIREN.name: _siren,
}
assert set(_SCENE_PIXELS) == set(world.SCENE_NAMES) and set(_OBJECT_PIXELS) == set(world.CONCEPT_NAMES)


@dataclass(frozen=True)
class Detection:
    """What a frame shows: a scene's and a concept's name from the world's tables, or None when unsure."""

    scene: str | None
    concept: str | None

    def __post_init__(self) -> None:
        if self.scene not in (None, *world.SCENE_NAMES) or self.concept not in (None, *world.CONCEPT_NAMES):
            raise ValueError(f"not a scene and a concept of the world: {self.scene!r}, {self.concept!r}")


def _best(counts: dict[str, float], low: float, high: float) -> str | None:
    """The name with the highest count if that lies in [low, high] and the runner-up is well behind."""
    ranked = sorted(counts.items(), key=lambda item: item[1], reverse=True)
    (name, best), (_, second) = ranked[0], ranked[1]
    return name if low <= best <= high and second < RUNNER_UP * best else None


def detect(frame: np.ndarray) -> Detection:
    """The scene and the object of an (H, W, 3) uint8 frame (64 x 64 in the world; other sizes work)."""
    pixels = HSV.of(frame)
    area = frame.shape[0] * frame.shape[1]
    scenes = {name: float(count(pixels).mean()) for name, count in _SCENE_PIXELS.items()}
    objects = {name: count(pixels) * 4096 / area for name, count in _OBJECT_PIXELS.items()}  # as if 64 x 64
    return Detection(_best(scenes, MIN_SCENE_SHARE, 1.0),
                     _best(objects, MIN_OBJECT_PIXELS, MAX_OBJECT_SHARE * 4096))


def blurred(frame: np.ndarray, factor: int = 4) -> np.ndarray:
    """``frame`` reduced ``factor`` times and enlarged back (bilinear): a stand-in for a soft decode."""
    image = Image.fromarray(frame)
    return np.asarray(image.reduce(factor).resize(image.size, Image.BILINEAR))


@dataclass(frozen=True)
class Accuracy:
    """Share of pictures whose scene and object the detector named right (an unsure answer is wrong)."""

    pictures: int
    scene: float
    concept: float
    unsure: float


def measure(count: int, seed: int = MEASURE_SEED, blur: int = 1) -> Accuracy:
    """The detector's accuracy on ``count`` fresh pictures of ``seed``, blurred by ``blur`` (1: as drawn)."""
    if count < 1 or blur < 1:
        raise ValueError(f"count and blur must be at least 1, got {count}, {blur}")
    scene = concept = unsure = 0
    for index in range(count):
        shown = world.picture(seed, index)
        frame = shown.pixels if blur == 1 else blurred(shown.pixels, blur)
        found = detect(frame)
        scene += found.scene == shown.scene
        concept += found.concept == shown.concept
        unsure += found.scene is None or found.concept is None
    return Accuracy(count, scene / count, concept / count, unsure / count)
