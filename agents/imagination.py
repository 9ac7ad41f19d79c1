"""Train a stable-baselines3 agent entirely inside a world-model environment ("in imagination").

:func:`train_in_imagination` builds a batch of the registered world env through :class:`~envs.sb3.SB3WorldVecEnv`
(one batched torch core, same-step autoreset, so PPO bootstraps the imagination horizon's truncations) and trains
PPO (or SAC for continuous actions) on it with :func:`agents.sb3_training.train_policy`: ``OUT/policy.zip``,
``OUT/returns.csv`` (one row per finished imagined episode), ``OUT/learning_curve.png`` and ``OUT/run.json``.
Evaluate the result in the real simulator with :func:`agents.real_eval.real_eval`, and compare it with the same
algorithm trained there (:func:`agents.reality.train_in_reality`).

    genie-env imagine genie_env/Genie-Boxing-v0 --algo PPO --steps 20000 --num-envs 16 --out runs/boxing_ppo
"""

from __future__ import annotations

import os
from typing import Any

from agents.sb3_training import ALGORITHMS, SelectKeys, TrainingResult, plot_learning_curve, train_policy
from envs.sb3 import SB3WorldVecEnv

ImaginationResult = TrainingResult
"""What :func:`train_in_imagination` wrote and saw (:class:`~agents.sb3_training.TrainingResult`)."""

__all__ = ["ALGORITHMS", "ImaginationResult", "SelectKeys", "plot_learning_curve", "train_in_imagination"]


def train_in_imagination(
    env_id: str,
    out: str | os.PathLike[str],
    *,
    algo: str = "PPO",
    total_steps: int = 10_000,
    num_envs: int = 8,
    seed: int = 0,
    checkpoint_every: int = 5_000,
    algo_kwargs: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
    observation_keys: list[str] | None = None,
    progress: bool = True,
) -> TrainingResult:
    """Trains ``algo`` for ``total_steps`` env steps inside the world env ``env_id`` only.

    Args:
        env_id: A registered world-model id (``genie_env/Genie-Boxing-v0``, ``genie_env/GESim-v0`` ...).
        out: Run directory (``policy.zip``, ``checkpoints/``, ``tb/``, ``returns.csv``, ``learning_curve.png``,
            ``run.json``).
        algo: ``"PPO"`` (any action space) or ``"SAC"`` (continuous actions).
        total_steps: Environment steps over all envs.
        num_envs: Worlds stepped as one batch.
        seed: Seed of the worlds (reset draws) and of the algorithm.
        checkpoint_every: Env steps between checkpoints (SB3's ``CheckpointCallback``; 0 disables).
        algo_kwargs: Extra arguments of the algorithm (``n_steps``, ``learning_rate``, ...).
        env_kwargs: Extra arguments of the env (``maskgit_steps``, ``checkpoint``, ...).
        observation_keys: Train on these entries of a ``Dict`` observation only (default: all of them).
        progress: Show a progress bar.

    Raises:
        ValueError: For an unknown algorithm, SAC on discrete actions, or a non-positive step count.
    """
    if algo not in ALGORITHMS:
        raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}")
    if total_steps < 1 or num_envs < 1:
        raise ValueError(f"total_steps and num_envs must be >= 1, got {total_steps} and {num_envs}")
    venv = SB3WorldVecEnv.from_id(env_id, num_envs=num_envs, **(env_kwargs or {}))
    return train_policy(
        venv,
        out,
        algo=algo,
        total_steps=total_steps,
        seed=seed,
        checkpoint_every=checkpoint_every,
        algo_kwargs=algo_kwargs,
        observation_keys=observation_keys,
        progress=progress,
        label="imagine",
        description={"env_id": env_id, "env_kwargs": env_kwargs or {}, "world": True},
    )
