"""Small vectorised numpy drawing kit shared by the procedural generators.

Everything returns arrays; nothing here keeps state. Colours are float32 RGB in [0, 1] until the
generator quantises the final frames to uint8.
"""

from __future__ import annotations

import colorsys
import functools

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
TEXTURES = ("solid", "hstripes", "vstripes", "checker", "dots", "diagonal")
HUES = 24
#: an object's two colours: pattern pixels take the light variant (polarity 0) or the saturated one (1)
POLARITIES = 2


def palette_colour(hue_index: int, light: bool = False) -> np.ndarray:
    """One of ``HUES`` saturated colours, evenly spaced in hue (a lighter variant on request)."""
    h = (hue_index % HUES) / HUES
    r, g, b = colorsys.hsv_to_rgb(h, 0.45 if light else 0.9, 1.0 if light else 0.85)
    return np.array([r, g, b], dtype=np.float32)


def value_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a random grid with spacing ``cell`` pixels, bilinearly interpolated."""
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    ys = np.arange(h, dtype=np.float32) / cell
    xs = np.arange(w, dtype=np.float32) / cell
    y0, x0 = ys.astype(np.int64), xs.astype(np.int64)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    # smoothstep weights avoid visible grid lines
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx).astype(np.float32)


def fractal_noise(rng: np.random.Generator, h: int, w: int, cell: int, octaves: int = 3) -> np.ndarray:
    """Sum of ``octaves`` value-noise layers, halving the cell size each time; in [0, 1]."""
    out = np.zeros((h, w), dtype=np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        out += amp * value_noise(rng, h, w, max(cell, 1))
        total += amp
        amp *= 0.5
        cell //= 2
    return out / total


def shape_mask(shape: str, size: int) -> np.ndarray:
    """A ``[size, size]`` boolean silhouette of ``shape``, centred."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = (yy - c) / (size / 2.0), (xx - c) / (size / 2.0)
    r = np.sqrt(dx * dx + dy * dy)
    if shape == "circle":
        return r <= 0.95
    if shape == "square":
        return (np.abs(dx) <= 0.8) & (np.abs(dy) <= 0.8)
    if shape == "triangle":
        return (dy <= 0.8) & (dy >= -0.9) & (np.abs(dx) <= (dy + 0.9) / 1.7 * 0.95)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 0.95
    if shape == "cross":
        return ((np.abs(dx) <= 0.3) & (np.abs(dy) <= 0.9)) | ((np.abs(dy) <= 0.3) & (np.abs(dx) <= 0.9))
    if shape == "ring":
        return (r <= 0.95) & (r >= 0.5)
    raise ValueError(f"unknown shape {shape!r}")


def texture_pattern(texture: str, size: int, period: int = 4) -> np.ndarray:
    """A ``[size, size]`` float pattern in {0, 1}: which of an object's two colours each pixel takes."""
    yy, xx = np.mgrid[0:size, 0:size]
    half = max(period // 2, 1)
    if texture == "solid":
        p = np.zeros((size, size), bool)
    elif texture == "hstripes":
        p = (yy // half) % 2 == 0
    elif texture == "vstripes":
        p = (xx // half) % 2 == 0
    elif texture == "checker":
        p = ((yy // half) + (xx // half)) % 2 == 0
    elif texture == "dots":
        p = ((yy % period) < half) & ((xx % period) < half) & (((yy // period) + (xx // period)) % 2 == 0)
    elif texture == "diagonal":
        p = ((yy + xx) // half) % 2 == 0
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return p.astype(np.float32)


def object_sprite(
    shape: str, texture: str, hue: int, size: int, period: int, polarity: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """An object's RGB ``[size, size, 3]`` image and its ``[size, size]`` silhouette.

    Its two colours are a saturated hue and a light variant of the same hue, so colour, shape and
    texture each tell objects apart; ``polarity`` 1 swaps which of the two the pattern takes.
    """
    mask = shape_mask(shape, size)
    pat = texture_pattern(texture, size, period)[..., None]
    if polarity:
        pat = 1 - pat
    rgb = palette_colour(hue) * (1 - pat) + palette_colour(hue, light=True) * pat
    return rgb.astype(np.float32), mask


#: number of distinct objects: every (shape, texture, hue, polarity)
NUM_OBJECTS = len(SHAPES) * len(TEXTURES) * HUES * POLARITIES


def object_parts(obj: int) -> tuple[int, int, int, int]:
    """``(shape, texture, hue, polarity)`` indices of object ``obj`` in ``range(NUM_OBJECTS)``."""
    obj, polarity = divmod(int(obj), POLARITIES)
    obj, hue = divmod(obj, HUES)
    shape, texture = divmod(obj, len(TEXTURES))
    return shape, texture, hue, polarity


@functools.lru_cache(maxsize=8)
def object_bank(size: int, period: int) -> tuple[np.ndarray, np.ndarray]:
    """Every object of the object space: uint8 RGB ``[NUM_OBJECTS, size, size, 3]`` (quantised as a
    frame shows them) and its silhouette ``[NUM_OBJECTS, size, size]``; read-only, cached. Object
    ``o`` is ``object_sprite(*object_parts(o), size, period)``, computed the same way."""
    dark = np.stack([palette_colour(h) for h in range(HUES)])  # [HUES, 3]
    light = np.stack([palette_colour(h, light=True) for h in range(HUES)])
    rgb = np.empty((len(SHAPES), len(TEXTURES), HUES, POLARITIES, size, size, 3), np.uint8)
    sil = np.empty((len(SHAPES), len(TEXTURES), HUES, POLARITIES, size, size), bool)
    for s, shape in enumerate(SHAPES):
        m = shape_mask(shape, size)
        for t, texture in enumerate(TEXTURES):
            pat = texture_pattern(texture, size, period)
            for pol in range(POLARITIES):
                p = (1 - pat if pol else pat)[None, :, :, None]  # [1, size, size, 1]
                im = dark[:, None, None, :] * (1 - p) + light[:, None, None, :] * p
                rgb[s, t, :, pol] = quantise(im.astype(np.float32))
                sil[s, t, :, pol] = m
    rgb, sil = rgb.reshape(NUM_OBJECTS, size, size, 3), sil.reshape(NUM_OBJECTS, size, size)
    rgb.flags.writeable = sil.flags.writeable = False
    return rgb, sil


def quantise(rgb: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] to uint8 with rounding."""
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
