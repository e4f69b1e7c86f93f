"""Procedural images: one object of a known category, position and size on a naturalistic
background (1/f noise under a smooth contrast envelope)."""

from __future__ import annotations

import numpy as np

CATEGORIES: tuple[str, ...] = ("disc", "square", "triangle", "cross", "star", "ring")
"""Object categories of the procedural images."""

_CONTRAST_ENVELOPE_GAIN = 0.7  # background local contrast: exp(gain * smooth field)
_CONTRAST_ENVELOPE_CYCLES = 1.5  # low-pass sd of that field, cycles per image


def _object_sdf(category: str, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Signed distance (approximate, in object radii) to the outline of a unit object."""
    r = np.hypot(px, py)
    if category == "disc":
        return r - 1.0
    if category == "square":
        return np.maximum(np.abs(px), np.abs(py)) - 0.8
    if category == "triangle":
        angles = np.pi / 2 + np.array([0.0, 2.0, 4.0]) * np.pi / 3
        edges = [np.cos(a) * px + np.sin(a) * py for a in angles]
        return np.maximum.reduce(edges) - 0.5
    if category == "cross":
        bar1 = np.maximum(np.abs(px) - 1.0, np.abs(py) - 0.3)
        bar2 = np.maximum(np.abs(px) - 0.3, np.abs(py) - 1.0)
        return np.minimum(bar1, bar2)
    if category == "star":
        return r - (0.6 + 0.4 * np.cos(5 * np.arctan2(py, px)))
    if category == "ring":
        return np.abs(r - 0.72) - 0.28
    raise ValueError(category)


def _background(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-sd naturalistic textures: 1/f^alpha noise under a contrast envelope.

    The amplitude spectrum falls as 1/f^alpha (alpha per image in [0.9, 1.3]); the local
    contrast is modulated by ``exp(0.7 G)``, with ``G`` a smooth Gaussian field (low-pass,
    sd 1.5 cycles per image): as in natural images (a Gaussian scale mixture), contrast
    varies from place to place instead of being stationary.
    """
    from scipy import fft

    f = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    f = (f * size).astype(np.float32)  # cycles per image
    alpha = rng.uniform(0.9, 1.3, size=(n, 1, 1)).astype(np.float32)
    spectrum = fft.fft2(rng.standard_normal((n, size, size), dtype=np.float32))
    spectrum *= np.exp(-alpha * np.log(np.maximum(f, 1.0))[None])
    spectrum[:, 0, 0] = 0.0
    noise = fft.ifft2(spectrum).real
    envelope = fft.fft2(rng.standard_normal((n, size, size), dtype=np.float32))
    envelope *= np.exp(-(f**2) / (2 * _CONTRAST_ENVELOPE_CYCLES**2))[None]
    field = fft.ifft2(envelope).real
    field /= field.std(axis=(1, 2), keepdims=True)
    noise *= np.exp(_CONTRAST_ENVELOPE_GAIN * field)
    noise -= noise.mean(axis=(1, 2), keepdims=True)
    noise /= noise.std(axis=(1, 2), keepdims=True)
    return noise


def make_images(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    category = rng.integers(len(CATEGORIES), size=n)
    position = rng.uniform(-0.6, 0.6, size=(n, 2))
    radius = rng.uniform(0.2, 0.45, size=n)
    orientation = rng.uniform(0, 2 * np.pi, size=n)
    polarity = rng.choice([-1.0, 1.0], size=n)
    contrast = rng.uniform(0.15, 0.4, size=n)
    bg_mean = rng.uniform(0.35, 0.65, size=n)
    bg_sd = rng.uniform(0.06, 0.16, size=n)
    # chromatic directions orthogonal to grey, for the tint and the object colour
    chroma = rng.standard_normal((n, 2, 3))
    chroma -= chroma.mean(axis=2, keepdims=True)
    chroma /= np.linalg.norm(chroma, axis=2, keepdims=True)
    tint = chroma[:, 0] * rng.uniform(0.0, 0.05, size=(n, 1))
    colour = chroma[:, 1] * rng.uniform(0.0, 0.15, size=(n, 1))
    tex_orient = rng.uniform(0, np.pi, size=n)
    tex_wavelength = rng.uniform(0.1, 0.4, size=n)  # grid units (image width = 2)
    tex_amplitude = rng.uniform(0.0, 0.25, size=n)
    background = _background(n, size, rng)

    def per_image(a):
        return np.asarray(a, dtype=np.float32)[:, None, None]

    # pixel centres in grid units, x to the right, y downward
    c = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(2.0 / size) - 1.0
    gx, gy = c[None, None, :], c[None, :, None]
    dx = gx - per_image(position[:, 0])
    dy = gy - per_image(position[:, 1])
    cos_o, sin_o, rad = (
        per_image(np.cos(orientation)),
        per_image(np.sin(orientation)),
        per_image(radius),
    )
    px = (cos_o * dx + sin_o * dy) / rad
    py = (cos_o * dy - sin_o * dx) / rad
    alpha = np.empty((n, size, size), dtype=np.float32)
    for k, name in enumerate(CATEGORIES):
        sel = category == k
        if sel.any():
            sdf = _object_sdf(name, px[sel], py[sel]) * (rad[sel] * (size / 2.0))
            alpha[sel] = np.clip(0.5 - sdf, 0.0, 1.0)
    phase = per_image(np.cos(tex_orient)) * gx + per_image(np.sin(tex_orient)) * gy
    obj_lum = per_image(bg_mean + polarity * contrast) + per_image(tex_amplitude) * np.sin(
        phase * per_image(2 * np.pi / tex_wavelength)
    )
    lum = per_image(bg_mean) + per_image(bg_sd) * background
    lum += alpha * (obj_lum - lum)
    rgb = np.empty((n, size, size, 3), dtype=np.float32)
    for ch in range(3):
        rgb[..., ch] = (
            lum + per_image(tint[:, ch]) + alpha * per_image(colour[:, ch] - tint[:, ch])
        )
    rgb *= 255.0
    np.clip(rgb, 0.0, 255.0, out=rgb)
    images = np.rint(rgb, out=rgb).astype(np.uint8)
    objects = {
        "category": category,
        "position": position,
        "size": radius,
        "orientation": orientation,
    }
    return images, objects
