"""The interface every real simulator we record from implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from genie_env.data.features import Feature

#: One recorded frame: feature name -> value (images uint8 HWC, vectors float32, ...).
Frame = dict[str, np.ndarray]


@dataclass
class StepResult:
    """What a source returns after one action.

    ``reward``, ``terminated`` and ``truncated`` follow Gymnasium's step convention: they arrive with
    ``frame`` (the observation after the action).
    """

    frame: Frame
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


class RealSource(ABC):
    """A real simulator wrapped for recording.

    Subclasses declare their per-frame :attr:`features` (including one ``video`` feature per camera named
    ``observation.images.<camera>``) and produce frames that match them exactly.
    """

    #: Gymnasium id of the simulator, e.g. ``"FetchPush-v4"``.
    env_id: str
    #: Frames per second of the recording (``1 / env dt``).
    fps: float
    #: Text description stored in ``meta/tasks.jsonl``.
    task: str
    #: Real action space of the simulator.
    action_space: gym.Space

    @property
    @abstractmethod
    def features(self) -> dict[str, Feature]:
        """Every per-frame feature this source produces, images included."""

    @property
    def camera_names(self) -> list[str]:
        """Names of the cameras, in observation order."""
        prefix = "observation.images."
        return [k[len(prefix) :] for k, f in self.features.items() if f.is_video and k.startswith(prefix)]

    def metadata(self) -> dict[str, Any]:
        """Extra source metadata for ``meta/info.json`` (env kwargs, frames, action meanings)."""
        return {}

    @abstractmethod
    def reset(self, seed: int) -> Frame:
        """Start an episode from ``seed`` and return its first frame."""

    @abstractmethod
    def step(self, action: np.ndarray) -> StepResult:
        """Apply ``action`` and return the next frame with reward and end flags."""

    @abstractmethod
    def close(self) -> None:
        """Release the simulator (idempotent)."""

    def __enter__(self) -> RealSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
