"""Train a stable-baselines3 agent entirely inside a world-model environment ("in imagination").

:func:`train_in_imagination` builds a batch of the registered world env through :class:`~envs.sb3.SB3WorldVecEnv`
(one batched torch core, same-step autoreset, so PPO bootstraps the imagination horizon's truncations), trains
PPO (or SAC for continuous actions) with TensorBoard logs, periodic atomic checkpoints and a tqdm progress bar,
and writes ``OUT/policy.zip``, ``OUT/returns.csv`` (one row per finished imagined episode) and
``OUT/learning_curve.png``. Evaluate the result in the real simulator with :func:`agents.real_eval.real_eval`.

    genie-env imagine genie_env/Genie-Boxing-v0 --algo PPO --steps 20000 --num-envs 16 --out runs/boxing_ppo
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from tqdm.auto import tqdm

from envs.sb3 import SB3WorldVecEnv

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"PPO": PPO, "SAC": SAC}


@dataclass
class ImaginationResult:
    """What :func:`train_in_imagination` wrote and saw.

    Attributes:
        policy: The trained policy (``policy.zip``).
        returns: ``(timestep, return, length)`` of every finished imagined episode.
        curve: The learning-curve PNG, or ``None`` when no episode finished.
        timesteps: Environment steps taken (over all envs).
    """

    policy: Path
    returns: list[tuple[int, float, int]]
    curve: Path | None
    timesteps: int


class SelectKeys(VecEnvWrapper):
    """Keeps only some entries of a ``Dict`` observation (e.g. ``state`` and ``goal`` of a GE-Sim world).

    The policy then observes exactly those keys, and :func:`agents.real_eval.real_eval` feeds it the same keys
    from the real simulator (it drops the rest by the policy's observation space).

    Args:
        venv: A VecEnv with a ``Dict`` observation space.
        keys: The entries to keep, in order.

    Raises:
        ValueError: If the observations are not a ``Dict`` or a key is not among them.
    """

    def __init__(self, venv: VecEnv, keys: list[str]) -> None:
        space = venv.observation_space
        if not isinstance(space, gym.spaces.Dict):
            raise ValueError(f"observation keys need a Dict observation space, got {space}")
        missing = [k for k in keys if k not in space.spaces]
        if missing or not keys:
            raise ValueError(f"observation keys {keys} must be a non-empty subset of {list(space.spaces)}")
        self.keys = list(keys)
        super().__init__(venv, observation_space=gym.spaces.Dict({k: space.spaces[k] for k in self.keys}))

    def _select(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: obs[k] for k in self.keys}

    def reset(self) -> dict[str, np.ndarray]:
        return self._select(self.venv.reset())

    def step_wait(self) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, rewards, dones, infos = self.venv.step_wait()
        for info in infos:
            if "terminal_observation" in info:
                info["terminal_observation"] = self._select(info["terminal_observation"])
        return self._select(obs), rewards, dones, infos


class _EpisodeLog(BaseCallback):
    """Collects imagined episode returns from the VecEnv's step infos and drives a tqdm bar."""

    def __init__(self, total: int, progress: bool) -> None:
        super().__init__()
        self.total, self.progress = total, progress
        self.rows: list[tuple[int, float, int]] = []
        self._running: np.ndarray | None = None
        self._lengths: np.ndarray | None = None
        self._bar: Any = None

    def _on_training_start(self) -> None:
        n = self.training_env.num_envs
        self._running, self._lengths = np.zeros(n), np.zeros(n, dtype=int)
        self._bar = tqdm(total=self.total, desc="imagine", unit="step", disable=not self.progress)

    def _on_step(self) -> bool:
        assert self._running is not None and self._lengths is not None
        rewards, dones = self.locals["rewards"], self.locals["dones"]
        self._running += rewards
        self._lengths += 1
        for i in np.flatnonzero(dones):
            self.rows.append((self.num_timesteps, float(self._running[i]), int(self._lengths[i])))
            self.logger.record_mean("imagination/episode_return", float(self._running[i]))
            self._running[i], self._lengths[i] = 0.0, 0
        self._bar.update(len(dones))
        if self.rows:
            self._bar.set_postfix(episodes=len(self.rows), last_return=f"{self.rows[-1][1]:.3f}")
        return True

    def _on_training_end(self) -> None:
        self._bar.close()


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
) -> ImaginationResult:
    """Trains ``algo`` for ``total_steps`` env steps inside the world env ``env_id`` only.

    Args:
        env_id: A registered world-model id (``genie_env/Genie-Boxing-v0``, ``genie_env/GESim-v0`` ...).
        out: Run directory (``policy.zip``, ``checkpoints/``, ``tb/``, ``returns.csv``, ``learning_curve.png``).
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
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    venv: VecEnv = SB3WorldVecEnv.from_id(env_id, num_envs=num_envs, **(env_kwargs or {}))
    venv.seed(seed)
    if observation_keys:
        try:
            venv = SelectKeys(venv, observation_keys)
        except ValueError:
            venv.close()
            raise
    if algo == "SAC" and not isinstance(venv.action_space, gym.spaces.Box):
        venv.close()
        raise ValueError(f"SAC needs continuous actions; {env_id} has {venv.action_space} (use PPO)")
    policy = "MultiInputPolicy" if isinstance(venv.observation_space, gym.spaces.Dict) else "CnnPolicy"
    model = ALGORITHMS[algo](
        policy, venv, seed=seed, device="auto", tensorboard_log=str(root / "tb"), **(algo_kwargs or {})
    )
    log = _EpisodeLog(total_steps, progress)
    callbacks: list[BaseCallback] = [log]
    if checkpoint_every:
        every = max(checkpoint_every // num_envs, 1)
        callbacks.append(CheckpointCallback(every, str(root / "checkpoints"), name_prefix="policy"))
    try:
        model.learn(total_timesteps=total_steps, callback=CallbackList(callbacks), tb_log_name=algo)
        policy_path = root / "policy.zip"
        tmp = root / ".policy.tmp.zip"
        model.save(str(tmp))
        os.replace(tmp, policy_path)  # a crash never leaves a half-written policy
    finally:
        venv.close()
    with open(root / "returns.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestep", "return", "length"])
        writer.writerows(log.rows)
    curve = plot_learning_curve(log.rows, root / "learning_curve.png", title=f"{algo} in {env_id}")
    return ImaginationResult(policy_path, log.rows, curve, int(model.num_timesteps))


def plot_learning_curve(rows: list[tuple[int, float, int]], path: Path, title: str) -> Path | None:
    """Imagined episode returns against env steps (points and a running mean); ``None`` if no episode ended."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r[0] for r in rows])
    returns = np.array([r[1] for r in rows])
    window = max(1, len(returns) // 10)
    smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, returns, ".", alpha=0.35, label="episode return")
    ax.plot(steps[window - 1 :], smooth, "-", label=f"running mean ({window})")
    ax.set(xlabel="environment steps (all envs)", ylabel="imagined return", title=title)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
