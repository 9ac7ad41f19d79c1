"""The baseline of training in imagination: the same algorithm trained in the real simulator.

:class:`RealEnv` is the real simulator as a ``gymnasium.Env`` with the world envs' observation format (the
recorder of :func:`genie_env.data.sources.make_source` at 64x64, observations built by
:func:`agents.real_eval.observation`), so a policy trained on it and one trained in a world take the same inputs
and go through the same :func:`~agents.real_eval.real_eval`. :func:`train_in_reality` trains it with the loop the
imagination runs use (:func:`agents.sb3_training.train_policy`), for a number of env steps (the *equal-steps*
baseline) or a wall-clock budget (the *equal-time* baseline; ``run.json`` of an imagination run holds its seconds).

    genie-env real-train FetchReach-v4 --algo SAC --steps 12000 --num-envs 16 --out runs/reach_real_steps
    genie-env real-train FetchReach-v4 --algo SAC --seconds-of runs/reach_sac --num-envs 16 --out runs/reach_real_time
"""

from __future__ import annotations

import os
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.real_eval import SIZE, observation
from agents.sb3_training import ALGORITHMS, TrainingResult, train_policy
from genie_env.data.sources import make_source

FETCH_DISTANCE_THRESHOLD = 0.05
"""Fetch's success radius (metres), as in the GE-Sim worlds."""


class RealEnv(gym.Env):
    """A real simulator (Fetch or Atari) with the observations of the world envs learned from it.

    **Action space**: the simulator's (Fetch: ``Box(-1, 1, (4,))``; Atari: ``Discrete(n)``).

    **Observation space**: Atari: the ``(64, 64, 3)`` uint8 screen. Fetch: a ``Dict`` of the three ``(64, 64, 3)``
    uint8 cameras (``front``, ``side``, ``hand``), ``state`` (8: tip position and quaternion in the robot base
    frame, finger opening) and ``goal`` (3, base frame), as ``genie_env/GESim-*`` give.

    **Rewards**: the simulator's (Fetch's sparse ``-(distance > 0.05)``), or with ``reward_type="dense"`` on Fetch
    ``-distance`` between the achieved goal (the tip for FetchReach, the object otherwise) and the goal, the GE-Sim
    worlds' dense reward. ``info["is_success"]`` is the simulator's.

    **Episode end**: the simulator's termination and time limit (Fetch: 50 steps), or ``max_episode_steps``.

    **Seeding**: ``reset(seed=s)`` seeds ``self.np_random``; every episode then starts the simulator with a seed
    drawn from it, so a seeded env repeats its episodes exactly.

    Args:
        env_id: ``Fetch*-v4`` or ``ALE/<Game>-v5``.
        reward_type: ``"sparse"`` (the simulator's reward) or ``"dense"`` (Fetch only).
        max_episode_steps: Optional cap on the episode length.

    Version history: v0, the world envs' observation format at 64x64.
    """

    metadata = {"render_modes": []}

    def __init__(
        self, env_id: str, reward_type: Literal["sparse", "dense"] = "sparse", max_episode_steps: int | None = None
    ) -> None:
        if reward_type not in ("sparse", "dense"):
            raise ValueError(f"reward_type must be 'sparse' or 'dense', got {reward_type!r}")
        self.source = make_source(env_id, SIZE, max_episode_steps)
        features = self.source.features
        if reward_type == "dense" and "observation.goal" not in features:
            self.source.close()
            raise ValueError(f"reward_type='dense' needs a goal (Fetch); {env_id} has none")
        self.env_id, self.reward_type = env_id, reward_type
        self._achieved = "observation.object" if "observation.object" in features else "observation.state"
        self.action_space = self.source.action_space
        image = spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
        cameras = self.source.camera_names
        if cameras == ["screen"]:
            self.observation_space: spaces.Space = image
        else:
            entries: dict[str, spaces.Space] = {c: image for c in cameras}
            for key in ("state", "goal"):
                feature = features.get(f"observation.{key}")
                if feature is not None:
                    entries[key] = spaces.Box(-np.inf, np.inf, feature.shape, np.float32)
            self.observation_space = spaces.Dict(entries)
        self._started = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        frame = self.source.reset(int(self.np_random.integers(2**31 - 1)))
        self._started = True
        return observation(self.source, frame), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("step() before reset()")
        action = np.asarray(action)
        if not self.action_space.contains(action.astype(self.action_space.dtype).reshape(self.action_space.shape)):
            raise ValueError(f"action {action!r} is outside {self.action_space}")
        result = self.source.step(action.reshape(-1 if action.ndim else 1))
        reward = float(result.reward)
        info = dict(result.info)
        if self.reward_type == "dense":
            achieved = np.asarray(result.frame[self._achieved], dtype=np.float64)[:3]
            reward = -float(np.linalg.norm(achieved - np.asarray(result.frame["observation.goal"], np.float64)))
        if result.terminated or result.truncated:
            self._started = False
        return observation(self.source, result.frame), reward, result.terminated, result.truncated, info

    def close(self) -> None:
        self.source.close()


def train_in_reality(
    env_id: str,
    out: str | os.PathLike[str],
    *,
    algo: str = "PPO",
    total_steps: int | None = 10_000,
    max_seconds: float | None = None,
    num_envs: int = 8,
    seed: int = 0,
    checkpoint_every: int = 5_000,
    algo_kwargs: dict[str, Any] | None = None,
    reward_type: Literal["sparse", "dense"] = "sparse",
    observation_keys: list[str] | None = None,
    progress: bool = True,
) -> TrainingResult:
    """Trains ``algo`` in the real ``env_id`` (``num_envs`` copies stepped in turn) for ``total_steps`` env steps
    and/or ``max_seconds`` of wall-clock.

    Arguments as :func:`agents.imagination.train_in_imagination`, plus ``max_seconds`` (the equal-time
    baseline) and ``reward_type`` (:class:`RealEnv`). Writes the same run directory.
    """
    if algo not in ALGORITHMS:
        raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    RealEnv(env_id, reward_type).close()  # a bad id or reward type fails here, before any process work
    venv = DummyVecEnv([lambda: RealEnv(env_id, reward_type) for _ in range(num_envs)])
    return train_policy(
        venv,
        out,
        algo=algo,
        total_steps=total_steps,
        max_seconds=max_seconds,
        seed=seed,
        checkpoint_every=checkpoint_every,
        algo_kwargs=algo_kwargs,
        observation_keys=observation_keys,
        progress=progress,
        label="real",
        description={"env_id": env_id, "env_kwargs": {"reward_type": reward_type}, "world": False},
    )
