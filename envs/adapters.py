"""Gymnasium adapters over a :class:`~envs.core.WorldCore`: a single ``gymnasium.Env`` and a batched ``VectorEnv``.

Both are thin: they validate the caller's input (clear errors naming the value and the expectation), call the
core, and convert torch tensors to ``uint8`` HWC NumPy images and Python scalars at the boundary, which is what
Gymnasium's and SB3's ``check_env`` demand (rewards ``float``, flags ``bool``).

Seeding: ``reset(seed=...)`` seeds ``self.np_random``; the start state is drawn with it, and the core's torch
generator (every MaskGIT or diffusion draw) is seeded from it, so two envs reset with the same seed produce the
same observations for as long as they get the same actions.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from einops import rearrange
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.core import CoreStep, WorldCore
from envs.render import HumanWindow, tile_views
from genie_env.eval.metrics import to_uint8


class StepTiming:
    """Wall-clock of one model step, carried in ``info["timing"]``.

    Timings are measurements of the machine, not part of the simulated state: any two compare equal, so that
    determinism checks (Gymnasium's ``check_env`` compares ``info`` of two seeded runs) compare the state only.

    Attributes:
        model_s: seconds the batched core spent in the step (for a vector env: for the whole batch).
    """

    __slots__ = ("model_s",)

    def __init__(self, model_s: float) -> None:
        self.model_s = float(model_s)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StepTiming)

    def __hash__(self) -> int:
        return hash(StepTiming)

    def __repr__(self) -> str:
        return f"StepTiming(model_s={self.model_s:.4f})"


def images_to_numpy(images: torch.Tensor) -> np.ndarray:
    """Float ``(B, 3, H, W)`` in [-1, 1] -> ``uint8`` ``(B, H, W, 3)`` NumPy."""
    return rearrange(to_uint8(images.detach()), "b c h w -> b h w c").cpu().numpy()


def batch_to_numpy(out: CoreStep) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A batched core step as NumPy: rewards ``float32 (B,)``, terminations ``bool (B,)``, per-env info arrays."""
    reward = out.reward.detach().cpu().numpy().astype(np.float32)
    terminated = out.terminated.detach().cpu().numpy().astype(bool)
    # Copies: a CPU tensor's .numpy() shares its memory, and the core may later write into that tensor in place
    # (a restart resets the object estimate), which would change an info the caller already holds.
    info = {k: v.detach().cpu().numpy().copy() if isinstance(v, torch.Tensor) else v for k, v in out.info.items()}
    return reward, terminated, info


def truncations(steps: np.ndarray, terminated: np.ndarray, max_episode_steps: int | None) -> np.ndarray:
    """``bool (B,)``: episodes cut by the time limit (never the terminated ones; none without a limit)."""
    if max_episode_steps is None:
        return np.zeros(len(steps), dtype=bool)
    return (steps >= max_episode_steps) & ~terminated


def observations_to_numpy(obs: dict[str, torch.Tensor], space: spaces.Space) -> dict[str, np.ndarray] | np.ndarray:
    """Batched core observations -> what ``space`` (a single env's) holds, with a leading batch axis.

    Image entries (``uint8`` boxes in the space) become ``uint8`` HWC; vectors become the space's dtype. A ``Box``
    space takes the core's only entry.
    """
    if isinstance(space, spaces.Dict):
        return {key: _entry_to_numpy(obs[key], sub) for key, sub in space.spaces.items()}
    (value,) = obs.values()
    return _entry_to_numpy(value, space)


def _entry_to_numpy(value: torch.Tensor, space: spaces.Space) -> np.ndarray:
    if isinstance(space, spaces.Box) and space.dtype == np.uint8:
        return images_to_numpy(value)
    return value.detach().cpu().numpy().astype(space.dtype)


def unbatch(obs: dict[str, np.ndarray] | np.ndarray, index: int) -> dict[str, np.ndarray] | np.ndarray:
    """Env ``index``'s entry of batched observations."""
    if isinstance(obs, dict):
        return {k: v[index] for k, v in obs.items()}
    return obs[index]


def check_actions(actions: Any, space: spaces.Space, batch: int | None) -> np.ndarray:
    """Validates actions against a single env's space and returns them as a NumPy array.

    Args:
        actions: One action (``batch=None``) or ``batch`` of them stacked on a leading axis.
        space: The single env's ``Discrete`` or ``Box`` action space.
        batch: The number of envs, or ``None`` for a single env.

    Returns:
        ``int64`` ids (``Discrete``) or ``float32`` vectors (``Box``), shaped ``(batch, *space.shape)`` or
        ``space.shape``.

    Raises:
        TypeError: For a non-numeric or wrongly typed action (e.g. a float for a ``Discrete`` space).
        ValueError: For a wrong shape, NaN/inf, or a value outside the space.
    """
    where = "action" if batch is None else "actions"
    shape = tuple(space.shape or ()) if batch is None else (batch, *(space.shape or ()))
    try:
        array = np.asarray(actions)
    except Exception as exc:  # e.g. ragged nested lists
        raise TypeError(f"{where} must be array-like of shape {shape}, got {actions!r}") from exc
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise TypeError(f"{where} must be numeric, got {actions!r} (dtype {array.dtype})")
    if array.shape != shape:
        raise ValueError(f"{where} must have shape {shape} for {space}, got shape {array.shape}: {actions!r}")
    if isinstance(space, spaces.Discrete):
        if not np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
            raise TypeError(f"{where} must be integer ids in [0, {space.n}) for {space}, got dtype {array.dtype}")
        lo, hi = int(space.start), int(space.start + space.n)
        if array.size and (array.min() < lo or array.max() >= hi):
            raise ValueError(f"{where} must lie in [{lo}, {hi}) for {space}, got {array.tolist()}")
        return (array - lo).astype(np.int64)
    if isinstance(space, spaces.Box):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{where} must be finite, got {array.tolist()}")
        low, high = space.low, space.high
        if np.any(array < low) or np.any(array > high):
            raise ValueError(f"{where} must lie in [{low.min()}, {high.max()}] for {space}, got {array.tolist()}")
        return array.astype(np.float32)
    raise TypeError(f"unsupported action space {space}")


class _CoreUser:
    """State checks shared by the adapters: use after close, step before reset."""

    core: WorldCore | None
    _needs_reset: bool

    def _live_core(self, what: str) -> WorldCore:
        if self.core is None:
            raise RuntimeError(f"{what}() called on a closed {type(self).__name__}; create a new env")
        return self.core

    def _require_reset(self) -> WorldCore:
        core = self._live_core("step")
        if self._needs_reset:
            raise RuntimeError(f"{type(self).__name__}.step() called before reset(); call reset() first")
        return core


class WorldEnv(gym.Env, _CoreUser):
    """A single world-model environment: a ``gymnasium.Env`` over a core of one env.

    Subclasses (:class:`~envs.genie_world.GenieWorldEnv`, :class:`~envs.gesim_world.GESimWorldEnv`) build the
    core and document the spaces; this class implements the Gymnasium protocol.

    Args:
        core: A core with ``num_envs == 1``.
        render_mode: ``None``, ``"rgb_array"`` (all views tiled side by side) or ``"human"`` (a pygame window).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array", "human"], "render_fps": 15}

    def __init__(self, core: WorldCore, render_mode: str | None = None) -> None:
        if core.num_envs != 1:
            raise ValueError(f"a single env needs a core of 1 env, got {core.num_envs}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.core = core
        self.render_mode = render_mode
        self.metadata = {**type(self).metadata, "render_fps": core.render_fps}
        self.observation_space = core.single_observation_space
        self.action_space = core.single_action_space
        self._needs_reset = True
        self._window: HumanWindow | None = None

    def _info(self, core: WorldCore, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        info = {**core.describe(), "step": int(core.steps[0])}
        for key, value in (extra or {}).items():
            info[key] = value[0] if isinstance(value, np.ndarray) else value
        return info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Starts an episode from a real recorded start state drawn with ``np_random``.

        Args:
            seed: Seeds ``np_random`` and, through it, every torch draw of the model.
            options: ``{"start": i}`` picks start ``i`` of the bank instead of drawing one.
        """
        super().reset(seed=seed)
        core = self._live_core("reset")
        start = self._start_option(options, core)
        core.seed(self.np_random)
        starts = core.draw_starts(self.np_random, 1) if start is None else np.array([start])
        core.restart(np.array([0]), starts)
        self._needs_reset = False
        obs = unbatch(observations_to_numpy(core.observation(), self.observation_space), 0)
        if self.render_mode == "human":
            self.render()
        return obs, self._info(core, {"start": int(starts[0])})

    @staticmethod
    def _start_option(options: dict[str, Any] | None, core: WorldCore) -> int | None:
        if not options or options.get("start") is None:
            return None
        start = options["start"]
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < len(core.bank):
            raise ValueError(f"options['start'] must be an int in [0, {len(core.bank)}), got {start!r}")
        return int(start)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Renders the next frame(s) with the world model under ``action``."""
        core = self._require_reset()
        checked = check_actions(action, self.action_space, None)
        out = core.timed_step(torch.as_tensor(checked[None], device=core.device))
        reward, terminated, per_env = batch_to_numpy(out)
        obs = unbatch(observations_to_numpy(core.observation(), self.observation_space), 0)
        info = self._info(core, {**per_env, "timing": StepTiming(core.last_latency_s)})
        if self.render_mode == "human":
            self.render()
        return obs, float(reward[0]), bool(terminated[0]), False, info

    def render(self) -> np.ndarray | None:
        """``rgb_array``: ``uint8 (H, V*W, 3)`` of the current views side by side; ``human``: draws a window."""
        core = self._live_core("render")
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'human'")
            return None
        image = tile_views(core.frames())[0]
        if self.render_mode == "rgb_array":
            return image
        if self._window is None:
            self._window = HumanWindow(type(self).__name__, self.metadata["render_fps"])
        self._window.show(image)
        return None

    def close(self) -> None:
        """Frees the model and closes any window; calling it again does nothing."""
        if self._window is not None:
            self._window.close()
            self._window = None
        if self.core is not None:
            self.core.close()
            self.core = None


class WorldVectorEnv(VectorEnv, _CoreUser):
    """``num_envs`` world-model environments stepped as one batch (``gymnasium.vector.VectorEnv``).

    Autoreset is ``AutoresetMode.NEXT_STEP`` (Gymnasium's default): the step after an episode ends returns the
    reset observation of that env, with reward 0 and both flags False, and ignores its action. Episodes are
    truncated after ``max_episode_steps`` steps (``gym.make_vec`` passes the registered value).

    ``info`` holds per-env arrays with ``_key`` masks, as Gymnasium's vector envs do.

    Args:
        core: The batched core.
        max_episode_steps: Truncation horizon; ``None`` never truncates.
        render_mode: ``None`` or ``"rgb_array"`` (``render()`` returns one tiled image per env).
    """

    metadata: dict[str, Any] = {
        "render_modes": ["rgb_array"],
        "render_fps": 15,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(self, core: WorldCore, max_episode_steps: int | None = None, render_mode: str | None = None) -> None:
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be None or >= 1, got {max_episode_steps!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.core = core
        self.num_envs = core.num_envs
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.metadata = {**type(self).metadata, "render_fps": core.render_fps}
        self.single_observation_space = core.single_observation_space
        self.single_action_space = core.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._needs_reset = True
        self._autoreset = np.zeros(self.num_envs, dtype=bool)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Resets every env (``seed``: one int for the batch, as Gymnasium's batched envs take)."""
        if isinstance(seed, list):
            raise ValueError("a batched world-model env is seeded with one int for the whole batch, not a list")
        super().reset(seed=seed)
        core = self._live_core("reset")
        core.seed(self.np_random)
        ids = np.arange(self.num_envs)
        core.restart(ids, core.draw_starts(self.np_random, self.num_envs))
        self._needs_reset = False
        self._autoreset[:] = False
        return observations_to_numpy(core.observation(), self.single_observation_space), core.describe()

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Steps every env; envs whose episode ended at the previous step restart instead (NEXT_STEP)."""
        core = self._require_reset()
        checked = check_actions(actions, self.single_action_space, self.num_envs)
        out = core.timed_step(torch.as_tensor(checked, device=core.device))
        reward, terminated, per_env = batch_to_numpy(out)
        restarting = np.flatnonzero(self._autoreset)
        if restarting.size:
            core.restart(restarting, core.draw_starts(self.np_random, restarting.size))
            reward[restarting], terminated[restarting] = 0.0, False
        steps = core.steps.numpy()
        truncated = truncations(steps, terminated, self.max_episode_steps)
        self._autoreset = terminated | truncated
        info: dict[str, Any] = {**core.describe(), "timing": StepTiming(core.last_latency_s), "step": steps.copy()}
        for key, value in per_env.items():
            info[key] = value
            info[f"_{key}"] = np.ones(self.num_envs, dtype=bool)
        obs = observations_to_numpy(core.observation(), self.single_observation_space)
        return obs, reward, terminated, truncated, info

    def render(self) -> tuple[np.ndarray, ...] | None:
        """One ``uint8 (H, V*W, 3)`` image per env (``rgb_array``)."""
        core = self._live_core("render")
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode='rgb_array'")
            return None
        return tuple(tile_views(core.frames()))

    def close_extras(self, **kwargs: Any) -> None:
        """Frees the model; ``close()`` may be called any number of times."""
        if self.core is not None:
            self.core.close()
            self.core = None
