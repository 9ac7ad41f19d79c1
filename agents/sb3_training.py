"""The stable-baselines3 training loop shared by training in a world model and training in the real simulator.

:func:`train_policy` trains PPO (any action space) or SAC (continuous actions) on a ready SB3 ``VecEnv`` for a
number of env steps and/or a wall-clock budget, with TensorBoard logs, periodic checkpoints and a tqdm bar, and
writes into the run directory:

* ``policy.zip`` (atomically), ``checkpoints/``, ``tb/``;
* ``returns.csv``: ``timestep, seconds, return, length`` of every finished training episode;
* ``learning_curve.png``: those returns against env steps;
* ``run.json``: what was trained where, steps taken and wall-clock seconds (what a same-budget baseline needs).
"""

from __future__ import annotations

import csv
import json
import os
import time
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

from genie_env.data.lerobot import atomic_write_text

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"PPO": PPO, "SAC": SAC}
UNBOUNDED_STEPS = 10**12
"""Step cap of a run bounded by wall-clock only."""


@dataclass
class TrainingResult:
    """What :func:`train_policy` wrote and saw.

    Attributes:
        policy: The trained policy (``policy.zip``).
        returns: ``(timestep, return, length)`` of every finished training episode.
        curve: The learning-curve PNG, or ``None`` when no episode finished.
        timesteps: Environment steps taken (over all envs).
        seconds: Wall-clock of the training (environment steps and updates).
    """

    policy: Path
    returns: list[tuple[int, float, int]]
    curve: Path | None
    timesteps: int
    seconds: float = 0.0


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
    """Collects training episode returns from the VecEnv's step infos, drives a tqdm bar and stops the run
    once its wall-clock budget is spent."""

    def __init__(self, total: int | None, max_seconds: float | None, progress: bool, label: str) -> None:
        super().__init__()
        self.total, self.max_seconds, self.progress, self.label = total, max_seconds, progress, label
        self.rows: list[tuple[int, float, int]] = []
        self.times: list[float] = []
        self.start = time.perf_counter()
        self._running: np.ndarray | None = None
        self._lengths: np.ndarray | None = None
        self._bar: Any = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def _on_training_start(self) -> None:
        n = self.training_env.num_envs
        self._running, self._lengths = np.zeros(n), np.zeros(n, dtype=int)
        self.start = time.perf_counter()
        self._bar = tqdm(total=self.total, desc=self.label, unit="step", disable=not self.progress)

    def _on_step(self) -> bool:
        assert self._running is not None and self._lengths is not None
        rewards, dones = self.locals["rewards"], self.locals["dones"]
        self._running += rewards
        self._lengths += 1
        for i in np.flatnonzero(dones):
            self.rows.append((self.num_timesteps, float(self._running[i]), int(self._lengths[i])))
            self.times.append(self.elapsed())
            self.logger.record_mean(f"{self.label}/episode_return", float(self._running[i]))
            self._running[i], self._lengths[i] = 0.0, 0
        self._bar.update(len(dones))
        if self.rows:
            self._bar.set_postfix(episodes=len(self.rows), last_return=f"{self.rows[-1][1]:.3f}")
        return self.max_seconds is None or self.elapsed() < self.max_seconds

    def _on_training_end(self) -> None:
        self._bar.close()


def train_policy(
    venv: VecEnv,
    out: str | os.PathLike[str],
    *,
    algo: str = "PPO",
    total_steps: int | None = 10_000,
    max_seconds: float | None = None,
    seed: int = 0,
    checkpoint_every: int = 5_000,
    algo_kwargs: dict[str, Any] | None = None,
    observation_keys: list[str] | None = None,
    progress: bool = True,
    label: str = "train",
    description: dict[str, Any] | None = None,
) -> TrainingResult:
    """Trains ``algo`` on ``venv`` (closed at the end) until ``total_steps`` env steps or ``max_seconds``.

    Args:
        venv: The environments, stepped as one SB3 ``VecEnv``; seeded here with ``seed``.
        out: Run directory (see the module docstring).
        algo: ``"PPO"`` (any action space) or ``"SAC"`` (continuous actions).
        total_steps: Environment steps over all envs (``None``: bounded by ``max_seconds`` only).
        max_seconds: Wall-clock budget of the training (``None``: bounded by ``total_steps`` only). The run stops
            at the first env step after the budget (SAC and PPO then save what they have).
        seed: Seed of the environments and of the algorithm.
        checkpoint_every: Env steps between checkpoints (SB3's ``CheckpointCallback``; 0 disables).
        algo_kwargs: Extra arguments of the algorithm (``n_steps``, ``learning_rate``, ...).
        observation_keys: Train on these entries of a ``Dict`` observation only (default: all of them).
        progress: Show a progress bar.
        label: Name of the run kind (progress bar, TensorBoard tag, plot), e.g. ``"imagine"`` or ``"real"``.
        description: Extra entries of ``run.json`` (env id, env arguments ...).

    Raises:
        ValueError: For an unknown algorithm, SAC on discrete actions, no budget, or a non-positive budget.
    """
    try:
        if algo not in ALGORITHMS:
            raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}")
        if total_steps is None and max_seconds is None:
            raise ValueError("give total_steps, max_seconds or both")
        if (total_steps is not None and total_steps < 1) or (max_seconds is not None and not max_seconds > 0):
            raise ValueError(f"total_steps must be >= 1 and max_seconds > 0, got {total_steps} and {max_seconds}")
        if observation_keys:
            venv = SelectKeys(venv, observation_keys)
        if algo == "SAC" and not isinstance(venv.action_space, gym.spaces.Box):
            raise ValueError(f"SAC needs continuous actions; the env has {venv.action_space} (use PPO)")
    except ValueError:
        venv.close()
        raise
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    venv.seed(seed)
    num_envs = venv.num_envs
    policy = "MultiInputPolicy" if isinstance(venv.observation_space, gym.spaces.Dict) else "CnnPolicy"
    model = ALGORITHMS[algo](
        policy, venv, seed=seed, device="auto", tensorboard_log=str(root / "tb"), **(algo_kwargs or {})
    )
    log = _EpisodeLog(total_steps, max_seconds, progress, label)
    callbacks: list[BaseCallback] = [log]
    if checkpoint_every:
        every = max(checkpoint_every // num_envs, 1)
        callbacks.append(CheckpointCallback(every, str(root / "checkpoints"), name_prefix="policy"))
    try:
        steps = total_steps if total_steps is not None else UNBOUNDED_STEPS
        model.learn(total_timesteps=steps, callback=CallbackList(callbacks), tb_log_name=algo)
        seconds = log.elapsed()
        policy_path = root / "policy.zip"
        tmp = root / ".policy.tmp.zip"
        model.save(str(tmp))
        os.replace(tmp, policy_path)  # a crash never leaves a half-written policy
    finally:
        venv.close()
    with open(root / "returns.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestep", "seconds", "return", "length"])
        writer.writerows((s, round(t, 3), r, n) for (s, r, n), t in zip(log.rows, log.times, strict=True))
    run = {
        **(description or {}),
        "kind": label,
        "algo": algo,
        "algo_kwargs": algo_kwargs or {},
        "observation_keys": observation_keys,
        "num_envs": num_envs,
        "seed": seed,
        "step_budget": total_steps,
        "seconds_budget": max_seconds,
        "timesteps": int(model.num_timesteps),
        "seconds": round(seconds, 3),
        "episodes": len(log.rows),
    }
    atomic_write_text(root / "run.json", json.dumps(run, indent=2) + "\n")
    title = f"{algo} ({label}) in {(description or {}).get('env_id', 'env')}"
    curve = plot_learning_curve(log.rows, root / "learning_curve.png", title=title, ylabel=f"{label} return")
    return TrainingResult(policy_path, log.rows, curve, int(model.num_timesteps), seconds)


def read_returns(run_dir: str | os.PathLike[str]) -> list[tuple[int, float, float, int]]:
    """``(timestep, seconds, return, length)`` rows of a run's ``returns.csv`` (``seconds`` NaN in old runs)."""
    with open(Path(run_dir) / "returns.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(int(r["timestep"]), float(r.get("seconds", "nan")), float(r["return"]), int(r["length"])) for r in rows]


def plot_learning_curve(
    rows: list[tuple[int, float, int]], path: Path, title: str, ylabel: str = "episode return"
) -> Path | None:
    """Training episode returns against env steps (points and a running mean); ``None`` if no episode ended."""
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
    ax.set(xlabel="environment steps (all envs)", ylabel=ylabel, title=title)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
