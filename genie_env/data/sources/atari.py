"""Atari (ale-py) recorded from the screen, resized to a square frame.

Genie learns from the frames alone; the true actions are stored only to evaluate the latent action model
and to map latent actions to real ones.

Per-frame features: ``observation.images.screen`` (H, W, 3) uint8, ``action`` (1,) int64 taken *at* the
frame, ``reward``, ``terminated``, ``truncated`` (arriving with the frame), ``lives`` (1,) int64.
The env keeps its v5 defaults (frameskip 4, sticky actions 0.25); they are written to ``meta/info.json``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image

from genie_env.data.features import Feature
from genie_env.data.sources.base import Frame, RealSource, StepResult


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """Area-resize an (H, W, 3) uint8 screen to (size, size, 3) (box filter: no aliasing of thin sprites)."""
    return np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BOX))


class AtariSource(RealSource):
    """Records an ALE game.

    Args:
        env_id: any ``ALE/<Game>-v5`` id.
        size: frame height and width in pixels.
        max_episode_steps: optional cap on the episode length (in agent steps, after frameskip).
    """

    def __init__(self, env_id: str, size: int = 64, max_episode_steps: int | None = None) -> None:
        import ale_py

        gym.register_envs(ale_py)
        if env_id not in gym.registry or not env_id.startswith("ALE/"):
            raise ValueError(f"unknown Atari id {env_id!r}; expected an 'ALE/<Game>-v5' id such as ALE/Boxing-v5")
        kwargs: dict[str, Any] = {}
        if max_episode_steps is not None:
            kwargs["max_episode_steps"] = max_episode_steps
        self.env_id = env_id
        self.env = gym.make(env_id, **kwargs)
        self.size = size
        self.max_episode_steps = max_episode_steps
        spec_kwargs = self.env.spec.kwargs if self.env.spec else {}
        self.frameskip = int(spec_kwargs.get("frameskip", 4))
        self.fps = 60.0 / self.frameskip
        self.task = f"play {env_id.split('/')[-1].split('-')[0]}"
        self.action_space = self.env.action_space
        self._closed = False

    @property
    def features(self) -> dict[str, Feature]:
        """See the module docstring."""
        return {
            "observation.images.screen": Feature("video", (self.size, self.size, 3)),
            "action": Feature("int64", (1,), ["action"], {"n": int(self.action_space.n)}),
            "reward": Feature("float32", (1,)),
            "terminated": Feature("bool", (1,)),
            "truncated": Feature("bool", (1,)),
            "lives": Feature("int64", (1,)),
        }

    def metadata(self) -> dict[str, Any]:
        """Action meanings and env settings."""
        spec_kwargs = dict(self.env.spec.kwargs) if self.env.spec else {}
        return {
            "robot_type": "atari",
            "action_meanings": list(self.env.unwrapped.get_action_meanings()),
            "env_kwargs": {k: v for k, v in spec_kwargs.items() if isinstance(v, (int, float, str, bool))},
            "max_episode_steps": self.max_episode_steps,
        }

    def _frame(self, obs: np.ndarray, lives: int) -> Frame:
        return {
            "observation.images.screen": resize_frame(obs, self.size),
            "lives": np.array([lives], dtype=np.int64),
        }

    def reset(self, seed: int) -> Frame:
        """Reset the game with ``seed`` and return frame 0."""
        self._check_open()
        obs, info = self.env.reset(seed=int(seed))
        return self._frame(obs, int(info.get("lives", 0)))

    def step(self, action: np.ndarray) -> StepResult:
        """Apply an integer action in ``[0, n)``."""
        self._check_open()
        arr = np.asarray(action).reshape(-1)
        if arr.shape != (1,) or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"Atari action must be one integer, got {action!r}")
        a = int(arr[0])
        if not 0 <= a < self.action_space.n:
            raise ValueError(f"Atari action {a} out of range [0, {self.action_space.n})")
        obs, reward, terminated, truncated, info = self.env.step(a)
        return StepResult(
            self._frame(obs, int(info.get("lives", 0))), float(reward), bool(terminated), bool(truncated), {}
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self.env_id} source is closed")

    def close(self) -> None:
        """Close the emulator (idempotent)."""
        if not self._closed:
            self.env.close()
            self._closed = True
