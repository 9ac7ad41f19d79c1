"""A stable-baselines3 ``VecEnv`` over a batched world-model core.

SB3 does not take Gymnasium vector envs, and its contract differs: ``reset()`` returns only observations,
autoreset happens *in the same step* with the last observation of the finished episode in
``infos[i]["terminal_observation"]``, and ``infos[i]["TimeLimit.truncated"]`` tells PPO/A2C to bootstrap from it
(imagined episodes are cut at ``max_episode_steps``, so this matters).

Example::

    from stable_baselines3 import PPO
    from envs.sb3 import SB3WorldVecEnv

    venv = SB3WorldVecEnv.from_id("genie_env/Genie-Boxing-v0", num_envs=16)
    PPO("CnnPolicy", venv, n_steps=64).learn(10_000)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from envs.adapters import StepTiming, batch_to_numpy, check_actions, observations_to_numpy, truncations, unbatch
from envs.core import WorldCore
from envs.render import tile_views


class SB3WorldVecEnv(VecEnv):
    """``num_envs`` world-model envs as one SB3 ``VecEnv`` (same-step autoreset).

    Args:
        core: The batched core (e.g. ``GenieCore(..., num_envs=16)``).
        max_episode_steps: Truncation horizon; ``None`` never truncates.
        render_mode: ``None`` or ``"rgb_array"``.
    """

    def __init__(self, core: WorldCore, max_episode_steps: int | None = None, render_mode: str | None = None) -> None:
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be None or >= 1, got {max_episode_steps!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.core: WorldCore | None = core
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.np_random = np.random.default_rng()
        self._actions: np.ndarray | None = None
        self._needs_reset = True
        super().__init__(core.num_envs, core.single_observation_space, core.single_action_space)

    @classmethod
    def from_id(cls, env_id: str, num_envs: int, **kwargs: Any) -> SB3WorldVecEnv:
        """Builds the registered id's batched env and adapts its core (kwargs go to the env, as ``gym.make_vec``).

        Raises:
            ValueError: If the id has no world-model core (a registered id of this package is expected).
        """
        vector_env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)
        core = getattr(vector_env.unwrapped, "core", None)
        if not isinstance(core, WorldCore):
            raise ValueError(f"{env_id!r} is not a world-model env of this package (no WorldCore)")
        return cls(core, vector_env.unwrapped.max_episode_steps, vector_env.unwrapped.render_mode)

    def _live(self) -> WorldCore:
        if self.core is None:
            raise RuntimeError("this SB3WorldVecEnv is closed; create a new one")
        return self.core

    def _observations(self) -> Any:
        return observations_to_numpy(self._live().observation(), self.observation_space)

    def reset(self) -> Any:
        """Restarts every env (seeded by :meth:`seed` if it was called since the last reset)."""
        core = self._live()
        if self._seeds[0] is not None:
            self.np_random = np.random.default_rng(self._seeds[0])
        core.seed(self.np_random)
        starts = core.draw_starts(self.np_random, self.num_envs)
        core.restart(np.arange(self.num_envs), starts)
        self._reset_seeds()
        self._needs_reset = False
        self.reset_infos = [{**core.describe(), "start": int(s)} for s in starts]
        return self._observations()

    def step_async(self, actions: np.ndarray) -> None:
        if self._live() is not None and self._needs_reset:
            raise RuntimeError("SB3WorldVecEnv.step() called before reset()")
        self._actions = check_actions(actions, self.action_space, self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        core = self._live()
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        out = core.timed_step(torch.as_tensor(self._actions, device=core.device))
        self._actions = None
        rewards, terminated, per_env = batch_to_numpy(out)
        steps = core.steps.numpy()
        truncated = truncations(steps, terminated, self.max_episode_steps)
        dones = terminated | truncated
        timing = StepTiming(core.last_latency_s)
        infos: list[dict[str, Any]] = [
            {**core.describe(), "timing": timing, "step": int(steps[i]), **{k: v[i] for k, v in per_env.items()}}
            for i in range(self.num_envs)
        ]
        finished = np.flatnonzero(dones)
        if finished.size:
            last = self._observations()
            for i in finished:
                infos[i]["terminal_observation"] = unbatch(last, int(i))
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            core.restart(finished, core.draw_starts(self.np_random, finished.size))
        return self._observations(), rewards, dones, infos

    def close(self) -> None:
        """Frees the model; calling it again does nothing."""
        if self.core is not None:
            self.core.close()
            self.core = None

    def get_images(self) -> Sequence[np.ndarray | None]:
        """One ``uint8 (H, V*W, 3)`` image per env."""
        return list(tile_views(self._live().frames()))

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute of this batched env (shared by all of its envs), once per index."""
        value = getattr(self, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Sets an attribute shared by every env (the envs are one batch)."""
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any) -> list:
        """Calls a method of the batched env once, returning its result for every index."""
        result = getattr(self, method_name)(*method_args, **kwargs)
        return [result for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """World-model envs are never wrapped inside this batch."""
        return [False for _ in self._indices(indices)]
