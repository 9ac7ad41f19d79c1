"""Pictures people look at: tiled views, PNG strips and preview videos of rollouts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from einops import rearrange

from genie_env.data.video import write_video


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale of (..., H, W, C) uint8 images (keeps 64x64 pixels crisp)."""
    if factor < 1:
        raise ValueError(f"upscale factor must be >= 1, got {factor}")
    return image.repeat(factor, axis=-3).repeat(factor, axis=-2)


def _join(images: Sequence[np.ndarray], gap: int, axis: int) -> np.ndarray:
    """Concatenate uint8 ``(..., H, W, 3)`` images along ``axis`` (-2 or -3) with white gaps between them."""
    if not images:
        raise ValueError("need at least one image to join")
    if gap == 0:
        return np.concatenate(list(images), axis=axis)
    shape = list(images[0].shape)
    shape[axis] = gap
    pad = np.full(shape, 255, np.uint8)
    parts: list[np.ndarray] = []
    for i, image in enumerate(images):
        parts += [pad, image] if i else [image]
    return np.concatenate(parts, axis=axis)


def tile_views(views: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Place views (each (..., H, W, 3) uint8, same shape) side by side with a white gap."""
    return _join(views, gap, axis=-2)


def stack_rows(rows: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Stack rows (each (..., H, W, 3) uint8, same width) top to bottom with a white gap."""
    return _join(rows, gap, axis=-3)


def strip(frames: np.ndarray, n: int = 8) -> np.ndarray:
    """A (H, n*W, 3) strip of ``n`` evenly spaced frames from (T, H, W, 3)."""
    idx = np.round(np.linspace(0, len(frames) - 1, min(n, len(frames)))).astype(int)
    return rearrange(frames[idx], "n h w c -> h (n w) c")


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a uint8 (H, W, 3) PNG, creating the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)
    return path


def save_preview_video(path: str | Path, frames: np.ndarray, fps: float, scale: int = 4) -> Path:
    """Write a widely playable (yuv420p) mp4 of (T, H, W, 3) uint8 frames, upscaled ``scale`` times."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, upscale(frames, scale), fps, lossless=False)
    return path
