"""The mini world's picture layers: scene backgrounds (numpy gradients) and sound objects (PIL shapes).

Backgrounds are smooth fields computed at the final size; objects are drawn over them at
:data:`SUPERSAMPLE` times that size and box-averaged down, so that their edges are soft as a photograph's.
The same seed gives the same bytes. Coordinates below are in final pixels (0..64).

Each layer keeps to its own colours (hue, saturation, value), which :mod:`tpos_live.mini.detect` reads
back: the scenes are low-saturation or dark fields, the objects saturated and bright, and no two layers
share a hue band. Objects are large (a quarter of the frame or more) because a later autoencoder sees
them through 8x8 latents, where thin or small marks vanish.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64  # final pictures are SIZE x SIZE RGB
SUPERSAMPLE = 4  # drawn this many times larger, then box-averaged down

RGB = tuple[int, int, int]
Point = tuple[float, float]


def hsv(rng: np.random.Generator, hue: tuple[float, float], sat: tuple[float, float],
        val: tuple[float, float]) -> RGB:
    """A colour drawn uniformly from a hue band (degrees; may wrap past 360) and saturation/value ranges."""
    h = rng.uniform(*hue) % 360.0
    r, g, b = colorsys.hsv_to_rgb(h / 360.0, rng.uniform(*sat), rng.uniform(*val))
    return round(r * 255), round(g * 255), round(b * 255)


def _scaled(points: list[Point]) -> list[Point]:
    return [(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in points]


def _mirrored(centre: np.ndarray, half: np.ndarray, ys: np.ndarray) -> list[Point]:
    """The outline of a shape symmetric about ``centre`` (per row): down its right side, up its left."""
    xs = np.concatenate([centre + half, (centre - half)[::-1]])
    return list(zip(xs.tolist(), np.concatenate([ys, ys[::-1]]).tolist(), strict=True))


def _ellipse(draw: ImageDraw.ImageDraw, cx: float, cy: float, rx: float, ry: float, fill: RGB) -> None:
    s = SUPERSAMPLE
    draw.ellipse([(cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s], fill=fill)


# --- scenes: (rng) -> float array (SIZE, SIZE, 3) in 0..255 ----------------------------------------------


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres, as (y, x) arrays."""
    axis = np.arange(SIZE) + 0.5
    return np.meshgrid(axis, axis, indexing="ij")


def _gradient(rng: np.random.Generator, top: RGB, bottom: RGB) -> np.ndarray:
    """``top`` blending into ``bottom`` down the frame, the axis tilted a little at random."""
    y, x = _grid()
    tilt = math.radians(rng.uniform(-15.0, 15.0))
    along = ((y - SIZE / 2) * math.cos(tilt) + (x - SIZE / 2) * math.sin(tilt)) / SIZE + 0.5
    t = np.clip(along, 0.0, 1.0)[..., None]
    return (1.0 - t) * np.asarray(top, float) + t * np.asarray(bottom, float)


def _grain(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """A faint sensor-like noise, so that a field is not perfectly flat."""
    return canvas + rng.normal(0.0, 1.5, canvas.shape)


def day_sky(rng: np.random.Generator) -> np.ndarray:
    hue = rng.uniform(198.0, 212.0)
    top = hsv(rng, (hue, hue), (0.45, 0.6), (0.8, 0.9))
    bottom = hsv(rng, (hue, hue), (0.28, 0.36), (0.95, 1.0))
    return _grain(rng, _gradient(rng, top, bottom))


def night(rng: np.random.Generator) -> np.ndarray:
    hue = rng.uniform(228.0, 248.0)
    canvas = _gradient(rng, hsv(rng, (hue, hue), (0.6, 0.8), (0.05, 0.1)),
                       hsv(rng, (hue, hue), (0.6, 0.8), (0.16, 0.24)))
    # A few dim stars, one pixel each: texture, too few and too dim to read as an object.
    for _ in range(rng.integers(3, 10)):
        x, y = rng.integers(0, SIZE, 2)
        canvas[y, x] = rng.uniform(120.0, 160.0)
    return _grain(rng, canvas)


def sea(rng: np.random.Generator) -> np.ndarray:
    hue = rng.uniform(176.0, 190.0)
    canvas = _gradient(rng, hsv(rng, (hue, hue), (0.65, 0.8), (0.55, 0.65)),
                       hsv(rng, (hue, hue), (0.7, 0.85), (0.3, 0.4)))
    # Horizontal swell: bands of lighter water that wobble along x.
    y, x = _grid()
    wavelength, wobble, period = rng.uniform(6.0, 11.0), rng.uniform(1.0, 3.0), rng.uniform(20.0, 40.0)
    phase = rng.uniform(0.0, 2 * math.pi, 2)
    swell = np.sin(2 * math.pi * (y + wobble * np.sin(2 * math.pi * x / period + phase[0])) / wavelength
                   + phase[1])
    return _grain(rng, canvas * (1.0 + 0.1 * swell[..., None]))


def desert(rng: np.random.Generator) -> np.ndarray:
    hue = rng.uniform(32.0, 40.0)
    upper = _gradient(rng, hsv(rng, (hue, hue), (0.3, 0.36), (0.9, 0.95)),
                      hsv(rng, (hue, hue), (0.36, 0.42), (0.86, 0.92)))
    lower = _gradient(rng, hsv(rng, (hue, hue), (0.46, 0.52), (0.8, 0.86)),
                      hsv(rng, (hue, hue), (0.5, 0.56), (0.74, 0.8)))
    # A dune crest: below a slow wave the sand is deeper in colour.
    y, x = _grid()
    crest = rng.uniform(24.0, 40.0) + rng.uniform(3.0, 8.0) * np.sin(
        2 * math.pi * x / rng.uniform(40.0, 90.0) + rng.uniform(0.0, 2 * math.pi))
    below = np.clip(y - crest + 0.5, 0.0, 1.0)[..., None]  # a pixel the crest crosses is mixed: no stairs
    return _grain(rng, below * lower + (1.0 - below) * upper)


# --- objects: (rng, draw) -> None, drawing onto the supersampled canvas ------------------------------------


def rain(rng: np.random.Generator, draw: ImageDraw.ImageDraw) -> None:
    """A grey cloud at the top and thick pale streaks falling from it at one slant."""
    cx, cy = rng.uniform(22.0, 42.0), rng.uniform(8.0, 14.0)
    grey = round(rng.uniform(0.45, 0.6) * 255)
    for _ in range(rng.integers(4, 7)):
        _ellipse(draw, cx + rng.uniform(-14.0, 14.0), cy + rng.uniform(-3.0, 3.0),
                 rng.uniform(7.0, 11.0), rng.uniform(5.0, 8.0), (grey, grey, grey))
    slant = math.radians(rng.uniform(-25.0, 25.0))
    for _ in range(rng.integers(12, 18)):
        x0, y0 = cx + rng.uniform(-22.0, 22.0), rng.uniform(cy + 6.0, 46.0)
        length = rng.uniform(10.0, 18.0)
        end = (x0 + length * math.sin(slant), y0 + length * math.cos(slant))
        colour = hsv(rng, (195.0, 215.0), (0.0, 0.12), (0.9, 1.0))
        draw.line(_scaled([(x0, y0), end]), fill=colour, width=round(2.2 * SUPERSAMPLE))


def _flame(cx: float, base: float, width: float, height: float, sway: float) -> list[Point]:
    """A teardrop: round at the base, pointed at the top, the tip swaying sideways."""
    u = np.linspace(0.0, 1.0, 24)  # 0 at the tip, 1 at the base
    half = u**0.9 * np.sqrt(1.0 - u)
    half = half / half.max() * width / 2
    ys = base - height * (1.0 - u)
    return _mirrored(cx + sway * (1.0 - u) ** 2, half, ys)


def fire(rng: np.random.Generator, draw: ImageDraw.ImageDraw) -> None:
    """Red-orange flame tongues rising from a base, each with an orange heart."""
    cx, base = rng.uniform(22.0, 42.0), rng.uniform(50.0, 58.0)
    tongues = [(cx + rng.uniform(-12.0, 12.0), rng.uniform(12.0, 18.0), rng.uniform(24.0, 40.0),
                rng.uniform(-6.0, 6.0)) for _ in range(rng.integers(3, 6))]
    for x, width, height, sway in tongues:
        draw.polygon(_scaled(_flame(x, base, width, height, sway)), fill=hsv(rng, (4.0, 16.0), (0.9, 1.0),
                                                                              (0.9, 1.0)))
    for x, width, height, sway in tongues:
        draw.polygon(_scaled(_flame(x, base, width * 0.5, height * 0.55, sway * 0.5)),
                     fill=hsv(rng, (26.0, 36.0), (0.85, 1.0), (0.95, 1.0)))


def bell(rng: np.random.Generator, draw: ImageDraw.ImageDraw) -> None:
    """A golden bell: rounded crown, flaring sides, a lip, a dark clapper and a hanging loop."""
    cx, top = rng.uniform(24.0, 40.0), rng.uniform(10.0, 16.0)
    width, height = rng.uniform(30.0, 40.0), rng.uniform(28.0, 36.0)
    gold = hsv(rng, (46.0, 56.0), (0.8, 0.95), (0.88, 1.0))
    u = np.linspace(0.0, 1.0, 20)
    half = width / 2 * (0.42 + 0.58 * u**2.2)
    ys = top + height * u
    outline = _mirrored(np.full_like(ys, cx), half, ys)
    _ellipse(draw, cx, top, width * 0.21, width * 0.16, gold)
    draw.polygon(_scaled(outline), fill=gold)
    lip = tuple(round(c * 0.82) for c in gold)
    draw.rectangle(_scaled([(cx - width / 2 - 1.5, top + height - 1.0), (cx + width / 2 + 1.5, top + height + 2.5)]),
                   fill=lip)
    _ellipse(draw, cx, top + height + 4.0, 3.5, 3.5, (70, 45, 25))
    s = SUPERSAMPLE
    draw.ellipse([(cx - 3) * s, (top - 9) * s, (cx + 3) * s, (top - 2) * s], outline=lip, width=2 * s)


def drums(rng: np.random.Generator, draw: ImageDraw.ImageDraw) -> None:
    """A magenta drum head with rings pulsing out of it, spaced so that the scene shows between them."""
    cx, cy = rng.uniform(24.0, 40.0), rng.uniform(24.0, 40.0)
    colour = hsv(rng, (288.0, 318.0), (0.7, 0.9), (0.85, 1.0))
    core = rng.uniform(6.0, 9.0)
    step, thickness = rng.uniform(7.0, 9.0), rng.uniform(2.5, 3.2)
    s = SUPERSAMPLE
    _ellipse(draw, cx, cy, core, core, colour)
    for ring in range(1, int(rng.integers(2, 4)) + 1):
        r = core + ring * step
        draw.ellipse([(cx - r) * s, (cy - r) * s, (cx + r) * s, (cy + r) * s], outline=colour,
                     width=round(thickness * s))


def birds(rng: np.random.Generator, draw: ImageDraw.ImageDraw) -> None:
    """A flock of lime-green chevrons, spread so that they do not overlap."""
    colour = hsv(rng, (88.0, 128.0), (0.75, 0.95), (0.78, 0.95))
    placed: list[Point] = []
    wanted = int(rng.integers(3, 6))
    for _ in range(200):  # rejection sampling: a flock whose birds keep their distance
        if len(placed) == wanted:
            break
        spot = (rng.uniform(12.0, 52.0), rng.uniform(12.0, 50.0))
        if all(math.dist(spot, other) > 20.0 for other in placed):
            placed.append(spot)
    for x, y in placed:
        span, lift = rng.uniform(18.0, 26.0) / 2, rng.uniform(5.0, 9.0)
        wing = [(x - span, y - lift), (x - span / 2, y - lift * 0.4), (x, y), (x + span / 2, y - lift * 0.4),
                (x + span, y - lift)]
        draw.line(_scaled(wing), fill=colour, width=round(rng.uniform(4.5, 5.5) * SUPERSAMPLE), joint="curve")


def siren(rng: np.random.Generator, draw: ImageDraw.ImageDraw) -> None:
    """A beacon: a dome split into a red and a blue half, on a dark base."""
    cx, base = rng.uniform(24.0, 40.0), rng.uniform(46.0, 54.0)
    width, height = rng.uniform(30.0, 40.0), rng.uniform(24.0, 32.0)
    red = hsv(rng, (352.0, 368.0), (0.85, 1.0), (0.85, 1.0))
    blue = hsv(rng, (214.0, 234.0), (0.85, 1.0), (0.85, 1.0))
    s = SUPERSAMPLE
    left, right, top = cx - width / 2, cx + width / 2, base - height
    box = [left * s, top * s, right * s, (top + width * 0.8) * s]
    draw.pieslice(box, 180, 270, fill=red)
    draw.pieslice(box, 270, 360, fill=blue)
    dome_mid = top + width * 0.4
    draw.rectangle(_scaled([(left, dome_mid), (cx, base)]), fill=red)
    draw.rectangle(_scaled([(cx, dome_mid), (right, base)]), fill=blue)
    grey = round(rng.uniform(0.2, 0.3) * 255)
    draw.rectangle(_scaled([(left - 3.0, base), (right + 3.0, base + 5.0)]), fill=(grey, grey, grey))


def background_pixels(background: np.ndarray) -> np.ndarray:
    """A scene's float drawing as the uint8 pixels a picture starts from."""
    return np.clip(np.rint(background), 0, 255).astype(np.uint8)


def compose(background: np.ndarray, layer) -> np.ndarray:
    """The final uint8 picture: ``layer(draw)`` drawn over ``background`` enlarged :data:`SUPERSAMPLE`
    times (each pixel repeated, so that the reduction gives the background's pixels back), then reduced."""
    pixels = background_pixels(background)
    image = Image.fromarray(pixels.repeat(SUPERSAMPLE, axis=0).repeat(SUPERSAMPLE, axis=1), "RGB")
    layer(ImageDraw.Draw(image))
    return np.asarray(image.reduce(SUPERSAMPLE), dtype=np.uint8)
