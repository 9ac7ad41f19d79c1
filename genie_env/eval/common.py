"""Pieces every evaluator shares: argument checks, evaluation windows and the PNG grid layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from genie_env.data.lerobot import LeRobotDataset
from genie_env.viz import stack_rows

PNG_WINDOWS = 4
"""Windows shown in an evaluation's PNG grid."""
PNG_SCALE = 2
"""Nearest-neighbour upscale of the grid's frames."""


def check_positive(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an ``int``; raises ``ValueError`` naming ``name`` unless it is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def window_starts(dataset: LeRobotDataset, episode: int, length: int, per_episode: int) -> np.ndarray:
    """First frames of ``per_episode`` evenly spaced windows of ``length`` frames in ``episode`` (int array).

    Raises:
        ValueError: If the episode is shorter than one window.
    """
    n = dataset.episode_length(episode)
    if n < length:
        raise ValueError(
            f"episode {episode} of {dataset.root} has {n} frames; a window needs prompt_frames + horizon = {length}"
        )
    return np.linspace(0, n - length, per_episode).round().astype(int)


def png_windows(num_windows: int) -> np.ndarray:
    """Indices of the (up to :data:`PNG_WINDOWS`) evenly spaced windows drawn in the PNG grid."""
    return np.unique(np.linspace(0, num_windows - 1, min(PNG_WINDOWS, num_windows)).round().astype(int))


def window_grid(windows: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """One image from per-window rows (each ``(H, W, 3)`` uint8, equal widths): a 2 px white gap between a
    window's rows, 8 px between windows."""
    return stack_rows([stack_rows(rows, gap=2) for rows in windows], gap=8)
