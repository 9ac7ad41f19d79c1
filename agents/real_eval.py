"""Evaluate a policy in the real simulator a world model was learned from.

The real simulator runs through the same recorder the datasets were made with
(:func:`genie_env.data.sources.make_source`, 64x64), and observations are built the way the world envs give them:

* **Atari** (``ALE/<Game>-v5``): the ``(64, 64, 3)`` uint8 screen, as ``genie_env/Genie-*`` worlds observe.
* **Fetch** (``Fetch*-v4``): a ``Dict`` of the three ``(64, 64, 3)`` uint8 cameras (``front``, ``side``, ``hand``),
  ``state`` (8: tip position and quaternion in the robot base frame, finger opening) and ``goal`` (3, base
  frame), as ``genie_env/GESim-*`` worlds observe. An SB3 policy whose observation space lacks a key (a world
  whose start bank has no goal) gets only the keys it knows.

A policy trained in a Genie world outputs *latent* actions; pass ``latent_mapping`` (a
:class:`~agents.latent_mapping.LatentActionMapping` or its JSON file) to act with ``latent_to_real`` of each.

Episode ``i`` is reset with seed ``seed + i``; the ``"random"`` policy samples the real action space seeded the
same way, so runs repeat exactly. The 95% interval of the mean return is Student's t interval
(``mean +- t_{0.975, n-1} * s / sqrt(n)``; ``None`` for fewer than two episodes); the success rate (Fetch:
``is_success`` of the episode's last step) gets Wilson's score interval.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from agents.latent_mapping import LatentActionMapping
from genie_env.data.sources import RealSource, make_source

SIZE = 64
CI_METHOD = "student-t 95% interval of the mean return; Wilson score 95% interval of the success rate"


def observation(source: RealSource, frame: dict[str, np.ndarray]) -> Any:
    """The world-env observation of a recorded frame (see the module docstring)."""
    cameras = source.camera_names
    if cameras == ["screen"]:
        return frame["observation.images.screen"]
    obs: dict[str, np.ndarray] = {c: frame[f"observation.images.{c}"] for c in cameras}
    obs["state"] = np.asarray(frame["observation.state"], dtype=np.float32)
    if "observation.goal" in frame:
        obs["goal"] = np.asarray(frame["observation.goal"], dtype=np.float32)
    return obs


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Student's t interval of the mean of ``values`` (``(None, None)`` for fewer than two)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n < 2:
        return None, None
    from scipy import stats

    mean = float(values.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return mean - half, mean + half


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's score 95% interval of a success rate."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _load_policy(policy: Any) -> Any:
    if isinstance(policy, (str, os.PathLike)) and str(policy) != "random":
        from envs.play import load_policy

        return load_policy(policy)
    return policy


def _filter_obs(policy: Any, obs: Any) -> Any:
    space = getattr(policy, "observation_space", None)
    if isinstance(obs, dict) and isinstance(space, spaces.Dict):
        missing = [k for k in space.spaces if k not in obs]
        if missing:
            raise ValueError(f"the policy observes {missing}, which the real simulator does not give")
        return {k: obs[k] for k in space.spaces}
    return obs


def _to_real(action: Any, source: RealSource, mapping: LatentActionMapping | None) -> np.ndarray:
    space = source.action_space
    if isinstance(space, spaces.Discrete):
        arr = np.asarray(action).reshape(-1)
        if arr.size != 1:
            raise ValueError(f"expected one discrete action, got {action!r}")
        if mapping is not None:
            return mapping.map_latent(arr.astype(np.int64)).reshape(1)
        a = int(arr[0])
        if not 0 <= a < space.n:
            raise ValueError(f"action {a} outside the real range [0, {space.n}); a latent policy needs a mapping")
        return np.array([a], dtype=np.int64)
    return np.asarray(action, dtype=np.float32).reshape(space.shape)


def real_eval(
    policy: Any,
    real_env_id: str,
    episodes: int,
    seed: int,
    *,
    latent_mapping: LatentActionMapping | str | os.PathLike[str] | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Run ``policy`` for ``episodes`` episodes of the real ``real_env_id`` and summarise the returns.

    Args:
        policy: An SB3 model (or anything with ``predict(obs, deterministic=True) -> (action, state)``), a path to
            an SB3 ``.zip``, or ``"random"``.
        real_env_id: ``ALE/<Game>-v5`` or ``Fetch*-v4``.
        episodes: Episode count (``>= 1``).
        seed: Episode ``i`` is reset with ``seed + i``.
        latent_mapping: Maps a Genie policy's latent actions to real ones (Atari only).
        max_steps: Optional cap on the episode length (truncation).

    Returns:
        JSON-serialisable dict: ``mean_return``, ``std_return``, ``ci95_low``, ``ci95_high``, ``success_rate``
        (``None`` where the simulator reports no success), ``success_ci95``, ``returns``, ``lengths``,
        ``successes`` and the settings.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be an integer >= 1, got {episodes!r}")
    mapping = latent_mapping
    if mapping is not None and not isinstance(mapping, LatentActionMapping):
        mapping = LatentActionMapping.load(mapping)
    policy_name = str(policy) if isinstance(policy, (str, os.PathLike)) else type(policy).__name__
    policy = _load_policy(policy)
    is_random = isinstance(policy, str)
    if is_random and policy != "random":
        raise ValueError(f"policy must be an SB3 model, a .zip path or 'random', got {policy!r}")
    source = make_source(real_env_id, SIZE, max_steps)
    real_space = source.action_space
    if mapping is not None and (not isinstance(real_space, spaces.Discrete) or mapping.num_real != real_space.n):
        source.close()
        raise ValueError(f"the mapping has {mapping.num_real} real actions; {real_env_id} acts in {real_space}")
    returns, lengths, successes = [], [], []
    reports_success = False
    t0 = time.perf_counter()
    try:
        for i in range(episodes):
            frame = source.reset(seed + i)
            source.action_space.seed(seed + i)
            total, steps, success = 0.0, 0, False
            while True:
                if is_random:
                    action = source.action_space.sample()
                    action = np.asarray(action).reshape(-1 if np.ndim(action) else 1)
                    real = _to_real(action, source, None)
                else:
                    act, _ = policy.predict(_filter_obs(policy, observation(source, frame)), deterministic=True)
                    real = _to_real(act, source, mapping)
                result = source.step(real)
                frame = result.frame
                total += result.reward
                steps += 1
                if "is_success" in result.info:
                    reports_success = True
                    success = bool(result.info["is_success"])
                if result.terminated or result.truncated:
                    break
            returns.append(total)
            lengths.append(steps)
            successes.append(success)
    finally:
        source.close()
    arr = np.asarray(returns, dtype=np.float64)
    low, high = t_interval(arr)
    n_success = int(sum(successes))
    return {
        "env_id": real_env_id,
        "policy": policy_name,
        "episodes": episodes,
        "seed": seed,
        "max_steps": max_steps,
        "latent_mapping": str(latent_mapping) if isinstance(latent_mapping, (str, Path)) else mapping is not None,
        "mean_return": float(arr.mean()),
        "std_return": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
        "ci95_low": low,
        "ci95_high": high,
        "success_rate": n_success / episodes if reports_success else None,
        "success_ci95": list(wilson_interval(n_success, episodes)) if reports_success else None,
        "ci_method": CI_METHOD,
        "returns": [float(r) for r in returns],
        "lengths": lengths,
        "successes": successes if reports_success else None,
        "seconds": time.perf_counter() - t0,
    }
